// Why: packing puts several documents in one sequence; it is only correct if no document sees another (attention
// restricted to the document, RoPE positions restarting) and no token is asked to predict the next document's first
// token. Then the packed loss is exactly the documents' own losses added up. Checked on the CPU engine for every golden
// family (Mixtral's sliding window of 6 included): the cross-entropy sum and count of a packed row equal those of the
// documents run one by one (1e-6 relative), so the packed loss equals the mean of per-document losses when their
// counts match; the parameter gradients agree too. The unpacked path must not change at all (bit-identical when
// given explicit positions t and document starts 0), and through the real sampler a packed epoch has the same total
// loss as a padded one.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "../test_util.h"
#include "dataset/sequence_sampler.h"
#include "dataset/text_dataset.h"
#include "dataset_test_util.h"
#include "model/cpu_engine.h"

namespace moetune {
namespace {

struct Doc {
  std::vector<int32_t> ids, labels;
};

std::vector<Doc> random_docs(const std::vector<int>& lengths, int vocab, uint64_t seed, bool some_ignored) {
  std::mt19937_64 rng(seed);
  std::vector<Doc> docs;
  for (int length : lengths) {
    Doc doc;
    for (int t = 0; t < length; ++t) {
      const int32_t id = static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab));
      doc.ids.push_back(id);
      doc.labels.push_back(some_ignored && t % 4 == 2 ? kIgnoreLabel : id);
    }
    docs.push_back(doc);
  }
  return docs;
}

// One packed row of `seq_len`: the documents back to back, then padding (its own "document").
Batch pack(const std::vector<Doc>& docs, int seq_len) {
  Batch batch;
  batch.batch_size = 1;
  batch.seq_len = seq_len;
  for (const Doc& doc : docs) {
    const int start = static_cast<int>(batch.input_ids.size());
    for (size_t t = 0; t < doc.ids.size(); ++t) {
      batch.input_ids.push_back(doc.ids[t]);
      batch.labels.push_back(t == 0 ? kIgnoreLabel : doc.labels[t]);
      batch.positions.push_back(static_cast<int32_t>(t));
      batch.doc_start.push_back(start);
    }
  }
  const int tail = static_cast<int>(batch.input_ids.size());
  while (static_cast<int>(batch.input_ids.size()) < seq_len) {
    batch.positions.push_back(static_cast<int32_t>(batch.input_ids.size()) - tail);
    batch.doc_start.push_back(tail);
    batch.input_ids.push_back(0);
    batch.labels.push_back(kIgnoreLabel);
  }
  return batch;
}

double relative(double a, double b) { return std::fabs(a - b) / std::fmax(std::fabs(b), 1e-30); }

class PackingFamily : public ::testing::TestWithParam<std::string> {};

TEST_P(PackingFamily, PackedLossEqualsPerDocumentLosses) {
  Model model = Model::from_pretrained(test_util::golden_folder(GetParam()));
  const ModelConfig& config = model.config();
  const ModelWeights weights = model.weights();
  for (const bool equal_counts : {false, true}) {
    SCOPED_TRACE(equal_counts ? "equal counts" : "varied lengths, some labels ignored");
    const std::vector<int> lengths = equal_counts ? std::vector<int>{5, 5, 5} : std::vector<int>{5, 7, 1, 4};
    const std::vector<Doc> docs = random_docs(lengths, config.vocab_size, 11, !equal_counts);
    const int seq_len = 18;
    const Batch packed = pack(docs, seq_len);

    CpuEngine engine(config, 1, seq_len);
    const LossParts whole = engine.forward(weights, packed.input_ids.data(), packed.labels.data(),
                                           packed.positions.data(), packed.doc_start.data());
    std::vector<float> packed_grads(model.buffer_size(), 0.0f);
    engine.backward(weights, model.layout().bind(packed_grads.data()), 1.0f, 0.0f);

    double ce_sum = 0.0, mean_of_losses = 0.0;
    int64_t counted = 0;
    std::vector<float> doc_grads(model.buffer_size(), 0.0f);
    for (const Doc& doc : docs) {
      CpuEngine alone(config, 1, static_cast<int>(doc.ids.size()));
      const LossParts parts = alone.forward(weights, doc.ids.data(), doc.labels.data());
      alone.backward(weights, model.layout().bind(doc_grads.data()), 1.0f, 0.0f);
      ce_sum += parts.ce_sum;
      counted += parts.counted;
      if (parts.counted > 0) mean_of_losses += parts.ce_sum / static_cast<double>(parts.counted) / 3.0;
    }
    EXPECT_EQ(whole.counted, counted);
    EXPECT_LE(relative(whole.ce_sum, ce_sum), 1e-6) << whole.ce_sum << " vs " << ce_sum;
    const double packed_loss = whole.ce_sum / static_cast<double>(whole.counted);
    EXPECT_LE(relative(packed_loss, ce_sum / static_cast<double>(counted)), 1e-6);
    if (equal_counts) EXPECT_NEAR(packed_loss, mean_of_losses, 1e-6);

    double worst = 0.0, scale = 0.0;
    for (size_t i = 0; i < doc_grads.size(); ++i) {
      worst = std::fmax(worst, std::fabs(packed_grads[i] - doc_grads[i]));
      scale = std::fmax(scale, std::fabs(doc_grads[i]));
    }
    EXPECT_LE(worst, 1e-5 * scale) << "gradients differ by " << worst << " (largest " << scale << ")";
  }
}

TEST_P(PackingFamily, UnpackedPathIsUnchanged) {
  Model model = Model::from_pretrained(test_util::golden_folder(GetParam()));
  const ModelConfig& config = model.config();
  const int batch = 2, seq_len = 9;
  const std::vector<Doc> rows = random_docs({seq_len, seq_len}, config.vocab_size, 5, true);
  std::vector<int32_t> ids, labels, positions, starts(static_cast<size_t>(batch * seq_len), 0);
  for (const Doc& row : rows) {
    ids.insert(ids.end(), row.ids.begin(), row.ids.end());
    labels.insert(labels.end(), row.labels.begin(), row.labels.end());
    for (int t = 0; t < seq_len; ++t) positions.push_back(t);
  }
  CpuEngine plain(config, batch, seq_len), explicit_rows(config, batch, seq_len);
  const LossParts a = plain.forward(model.weights(), ids.data(), labels.data());
  const LossParts b = explicit_rows.forward(model.weights(), ids.data(), labels.data(), positions.data(), starts.data());
  EXPECT_EQ(a.ce_sum, b.ce_sum);
  EXPECT_EQ(a.aux, b.aux);
  EXPECT_EQ(std::memcmp(plain.logits(), explicit_rows.logits(),
                        sizeof(float) * static_cast<size_t>(batch * seq_len * config.vocab_size)),
            0);
  // A packed forward in between does not leave anything behind: the next unpacked forward is the same again.
  const Batch packed = pack(random_docs({4, 5}, config.vocab_size, 9, false), seq_len);
  CpuEngine reused(config, 1, seq_len);
  const LossParts first = reused.forward(model.weights(), ids.data(), labels.data());
  reused.forward(model.weights(), packed.input_ids.data(), packed.labels.data(), packed.positions.data(),
                 packed.doc_start.data());
  const LossParts again = reused.forward(model.weights(), ids.data(), labels.data());
  EXPECT_EQ(first.ce_sum, again.ce_sum);
}

INSTANTIATE_TEST_SUITE_P(PackingGolden, PackingFamily, ::testing::ValuesIn(test_util::golden_families()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

// A dataset of `chats` generated chats in `temp`, tokenized for `model_folder`, selected for rows of `seq_len`.
std::unique_ptr<TextDataset> open_chats(const test_util::TempFolder& temp, const std::string& model_folder, int chats,
                                        int seq_len) {
  dataset_test::write_lines(temp.file("chats.jsonl"), dataset_test::chat_lines(chats));
  TextDataOptions options;
  options.data = temp.file("chats.jsonl");
  options.tokenizer = model_folder;
  options.cache = temp.file("chats.mtds");
  std::unique_ptr<TextDataset> data = TextDataset::open(options);
  SampleSetOptions sets;
  sets.seq_len = seq_len;
  data->select(sets);
  return data;
}

// Through the real data path: a chat dataset packed and padded gives the same summed loss over an epoch.
TEST(PackingSampler, PackedEpochHasThePaddedEpochsLoss) {
  test_util::TempFolder temp;
  const std::string model_folder = dataset_test::make_model("qwen2", temp.file("model"));
  const int seq_len = 256;
  const std::unique_ptr<TextDataset> data = open_chats(temp, model_folder, 24, seq_len);
  Model model = Model::from_pretrained(model_folder);
  CpuEngine engine(model.config(), 1, seq_len);

  auto epoch_loss = [&](bool packing, size_t* rows) {
    SequenceSampler sampler(data->train(), 1, 3, true, packing, data->pad_id());
    *rows = sampler.rows_in_epoch();
    double ce_sum = 0.0;
    int64_t counted = 0, real = 0;
    for (size_t r = 0; r < *rows; ++r) {
      const Batch batch = sampler.next();
      real += batch.real_tokens;
      EXPECT_EQ(batch.packed(), packing);
      const LossParts parts = engine.forward(model.weights(), batch.input_ids.data(), batch.labels.data(),
                                             packing ? batch.positions.data() : nullptr,
                                             packing ? batch.doc_start.data() : nullptr);
      ce_sum += parts.ce_sum;
      counted += parts.counted;
    }
    EXPECT_EQ(real, data->train().tokens());
    EXPECT_EQ(sampler.epoch(), 1);
    return std::make_pair(ce_sum, counted);
  };
  size_t packed_rows = 0, padded_rows = 0;
  const auto packed = epoch_loss(true, &packed_rows);
  const auto padded = epoch_loss(false, &padded_rows);
  EXPECT_EQ(padded_rows, 24u);
  EXPECT_LT(packed_rows, padded_rows / 2);
  EXPECT_EQ(packed.second, padded.second);
  EXPECT_LE(relative(packed.first, padded.first), 1e-6);
}

TEST(PackingSampler, RowsFollowTheRules) {
  test_util::TempFolder temp;
  const std::string model_folder = dataset_test::make_model("qwen2", temp.file("model"));
  const std::unique_ptr<TextDataset> data = open_chats(temp, model_folder, 40, 128);
  SequenceSampler sampler(data->train(), 4, 1, true, true, data->pad_id());
  EXPECT_GT(sampler.fill(), 0.75);  // samples of 40-90 tokens in rows of 128
  std::vector<int> seen(data->train().size(), 0);
  for (size_t b = 0; b * 4 < sampler.rows_in_epoch(); ++b) {
    const Batch batch = sampler.next();
    ASSERT_EQ(batch.positions.size(), batch.input_ids.size());
    for (int r = 0; r < batch.batch_size; ++r) {
      const size_t row = static_cast<size_t>(r) * 128;
      for (int t = 0; t < 128; ++t) {
        const int32_t start = batch.doc_start[row + t];
        ASSERT_LE(start, t);
        EXPECT_EQ(batch.positions[row + t], t - start);
        if (t == start) EXPECT_EQ(batch.labels[row + t], kIgnoreLabel) << "first token of a document has a label";
        if (t > 0) EXPECT_TRUE(start == batch.doc_start[row + t - 1] || start == t);
      }
    }
  }
  // Same (seed, epoch): same rows; resuming at a row continues identically.
  SequenceSampler a(data->train(), 2, 9, true, true, data->pad_id()), b(data->train(), 2, 9, true, true, data->pad_id());
  for (int i = 0; i < 5; ++i) a.next();
  b.seek(a.epoch(), a.position());
  for (int i = 0; i < 12; ++i) {
    const Batch x = a.next(), y = b.next();
    EXPECT_EQ(x.input_ids, y.input_ids);
    EXPECT_EQ(x.doc_start, y.doc_start);
  }
}

}  // namespace
}  // namespace moetune
