// Why: bad training data must fail at load time with one line naming file, line and item, and good data must become
// exactly the rows the loss expects (padding labelled -100, windows cut in order, a reproducible sampler). These tests
// pin both.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>

#include "core/error.h"
#include "train/data.h"

namespace moetune {
namespace {

// A fresh directory for one test, removed when it ends (tests may run in parallel processes).
class ScratchDir {
 public:
  ScratchDir()
      : root_(
            std::filesystem::temp_directory_path() /
            str("moetune_test_data_", ::testing::UnitTest::GetInstance()->current_test_info()->name(), "_", getpid())) {
    std::filesystem::remove_all(root_);
    std::filesystem::create_directories(root_);
  }
  ~ScratchDir() {
    std::error_code ignored;
    std::filesystem::remove_all(root_, ignored);
  }
  std::string root() const { return root_.string(); }
  std::string path(const std::string& name) const { return (root_ / name).string(); }
  std::string write(const std::string& name, const std::string& text) const {
    std::ofstream(path(name), std::ios::binary) << text;
    return path(name);
  }

 private:
  std::filesystem::path root_;
};

DataOptions options(int vocab_size = 100, int seq_len = 4) {
  DataOptions result;
  result.vocab_size = vocab_size;
  result.seq_len = seq_len;
  return result;
}

// Runs `load` and checks it throws moetune::Error whose single-line message contains every one of `parts`.
template <class Fn>
void expect_error(Fn&& load, std::vector<std::string> parts) {
  try {
    load();
    ADD_FAILURE() << "no error thrown; expected one containing \"" << parts.front() << "\"";
  } catch (const Error& error) {
    std::string message = error.what();
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    for (const auto& part : parts)
      EXPECT_NE(message.find(part), std::string::npos) << "missing \"" << part << "\" in: " << message;
  }
}

// Loads `text` as a JSONL file and checks the error names the file and contains every one of `parts`.
void expect_jsonl_error(const std::string& text, std::vector<std::string> parts) {
  ScratchDir dir;
  std::string path = dir.write("data.jsonl", text);
  parts.push_back(path);
  expect_error([&] { TokenDataset::load(path, options()); }, parts);
}

// A dataset of `count` one-token samples whose id is their index, so a batch row names its sample.
TokenDataset indexed_dataset(int count) {
  std::vector<Sample> samples(count);
  for (int i = 0; i < count; ++i) samples[i].input_ids = {i};
  return TokenDataset::from_samples(samples, options(count, 1));
}

// The sample order of `batches` batches of `batch_size` rows.
std::vector<int32_t> draw(BatchSampler& sampler, int batches) {
  std::vector<int32_t> order;
  for (int b = 0; b < batches; ++b) {
    Batch batch = sampler.next();
    order.insert(order.end(), batch.input_ids.begin(), batch.input_ids.end());
  }
  return order;
}

// ---- errors ----

TEST(Data, MissingFileNamesPath) {
  ScratchDir dir;
  std::string path = dir.path("nope.bin");
  expect_error([&] { TokenDataset::load(path, options()); }, {path, "no such file"});
}

TEST(Data, DirectoryIsNotReadableAsData) {
  ScratchDir dir;
  expect_error([&] { TokenDataset::load(dir.root(), options()); }, {dir.root(), "not a regular file"});
}

TEST(Data, EmptyFiles) {
  ScratchDir dir;
  std::string flat = dir.write("empty.bin", "");
  expect_error([&] { TokenDataset::load(flat, options()); }, {flat, "empty file"});
  std::string jsonl = dir.write("empty.jsonl", "");
  expect_error([&] { TokenDataset::load(jsonl, options()); }, {jsonl, "empty file"});
}

TEST(Data, JsonlWithOnlyBlankLinesHasNoSamples) { expect_jsonl_error("\n  \n\r\n", {"no samples"}); }

TEST(Data, FlatSizeNotMultipleOfFour) {
  ScratchDir dir;
  std::string path = dir.write("odd.bin", std::string(10, '\0'));
  expect_error([&] { TokenDataset::load(path, options()); }, {path, "10 bytes", "multiple of 4"});
}

TEST(Data, FlatFewerTokensThanOneWindow) {
  ScratchDir dir;
  std::string path = dir.path("short.bin");
  write_token_file(path, {1, 2, 3});
  expect_error([&] { TokenDataset::load(path, options(100, 4)); }, {path, "3 tokens", "seq_len window of 4"});
}

TEST(Data, FlatIdOutOfVocab) {
  ScratchDir dir;
  std::string path = dir.path("big.u32");
  write_token_file(path, {1, 2, 3, 4, 5, 100, 7, 8});
  expect_error([&] { TokenDataset::load(path, options(100, 4)); }, {path, "token 5", "id 100", "vocab_size 100"});
}

TEST(Data, JsonlMalformedNamesLine) {
  expect_jsonl_error("{\"input_ids\": [1, 2]}\n{\"input_ids\": [1, 2\n", {":2:", "malformed JSON"});
}

TEST(Data, JsonlLineNotObject) { expect_jsonl_error("[1, 2, 3]\n", {":1:", "not a JSON object", "array"}); }

TEST(Data, JsonlMissingInputIds) { expect_jsonl_error("{\"labels\": [1]}\n", {":1:", "missing \"input_ids\""}); }

TEST(Data, JsonlInputIdsNotArray) {
  expect_jsonl_error("{\"input_ids\": \"hello\"}\n", {":1:", "\"input_ids\" is not an array", "string"});
}

TEST(Data, JsonlNonIntegerId) {
  expect_jsonl_error("{\"input_ids\": [1, 2.5]}\n", {":1:", "input_ids[1]", "2.5", "not an integer"});
  expect_jsonl_error("{\"input_ids\": [\"7\"]}\n", {":1:", "input_ids[0]", "not an integer"});
  expect_jsonl_error("{\"input_ids\": [true]}\n", {":1:", "input_ids[0]", "not an integer"});
}

TEST(Data, JsonlNegativeId) { expect_jsonl_error("{\"input_ids\": [3, -1]}\n", {":1:", "input_ids[1]", "-1", ">= 0"}); }

TEST(Data, JsonlIdAtOrAboveVocab) {
  expect_jsonl_error("\n{\"input_ids\": [3, 100]}\n", {":2:", "input_ids[1]", "100", "vocab_size 100"});
  expect_jsonl_error("{\"input_ids\": [18446744073709551615]}\n", {":1:", "input_ids[0]", "18446744073709551615"});
}

TEST(Data, JsonlLabelsOfDifferentLength) {
  expect_jsonl_error("{\"input_ids\": [1, 2, 3], \"labels\": [1, 2]}\n", {":1:", "labels has 2", "input_ids has 3"});
}

TEST(Data, JsonlBadLabel) {
  expect_jsonl_error("{\"input_ids\": [1, 2], \"labels\": [-100, -1]}\n", {":1:", "labels[1]", "-1", "-100"});
  expect_jsonl_error("{\"input_ids\": [1, 2], \"labels\": [100, 2]}\n", {":1:", "labels[0]", "100"});
  expect_jsonl_error("{\"input_ids\": [1, 2], \"labels\": [1, null]}\n", {":1:", "labels[1]", "not an integer"});
}

TEST(Data, JsonlEmptyInputIds) { expect_jsonl_error("{\"input_ids\": []}\n", {":1:", "input_ids is empty"}); }

TEST(Data, JsonlTooLongWithoutTruncate) {
  expect_jsonl_error("{\"input_ids\": [1, 2]}\n{\"input_ids\": [1, 2, 3, 4, 5]}\n",
                     {":2:", "5 tokens", "seq_len 4", "truncate_long"});
}

TEST(Data, BadOptions) {
  ScratchDir dir;
  std::string path = dir.write("ok.jsonl", "{\"input_ids\": [1]}\n");
  expect_error([&] { TokenDataset::load(path, options(0, 4)); }, {"vocab_size"});
  expect_error([&] { TokenDataset::load(path, options(100, 0)); }, {"seq_len"});
  DataOptions bad_pad = options();
  bad_pad.pad_id = 100;
  expect_error([&] { TokenDataset::load(path, bad_pad); }, {"pad_id 100"});
}

TEST(Data, FromSamplesErrorsNameTheSample) {
  expect_error([] { TokenDataset::from_samples({}, options()); }, {"no samples"});
  expect_error(
      [] {
        TokenDataset::from_samples({{{1}, {}}, {{1, 200}, {}}}, options());
      },
      {"samples[1]", "input_ids[1]", "200"});
  expect_error([] { TokenDataset::from_samples({{{1, 2}, {1}}}, options()); }, {"samples[0]", "labels has 1"});
  expect_error([] { TokenDataset::from_samples({{{}, {}}}, options()); }, {"samples[0]", "input_ids is empty"});
}

// ---- happy paths ----

TEST(Data, JsonlPadsShortSamplesWithIgnoredLabels) {
  ScratchDir dir;
  DataOptions opts = options(100, 5);
  opts.pad_id = 9;
  std::string path = dir.write("pad.jsonl", "{\"input_ids\": [1, 2, 3]}\n");
  TokenDataset data = TokenDataset::load(path, opts);
  ASSERT_EQ(data.size(), 1u);
  EXPECT_EQ(data[0].input_ids, (std::vector<int32_t>{1, 2, 3, 9, 9}));
  EXPECT_EQ(data[0].labels, (std::vector<int32_t>{1, 2, 3, kIgnoreLabel, kIgnoreLabel}));
  EXPECT_EQ(data.real_tokens(), 3);
  EXPECT_EQ(data.dropped_tail_tokens(), 0);
}

TEST(Data, JsonlKeepsExplicitLabelsAndSkipsBlankLines) {
  ScratchDir dir;
  std::string path = dir.write("labels.jsonl",
                               "\n{\"input_ids\": [5, 6, 7, 8], \"labels\": [-100, -100, 7, 8]}\r\n\n"
                               "{\"input_ids\": [1], \"extra\": \"ignored\"}\n");
  TokenDataset data = TokenDataset::load(path, options(100, 4));
  ASSERT_EQ(data.size(), 2u);
  EXPECT_EQ(data[0].input_ids, (std::vector<int32_t>{5, 6, 7, 8}));
  EXPECT_EQ(data[0].labels, (std::vector<int32_t>{-100, -100, 7, 8}));
  EXPECT_EQ(data[1].labels, (std::vector<int32_t>{1, -100, -100, -100}));
  EXPECT_EQ(data.real_tokens(), 5);
}

TEST(Data, JsonlTruncatesWhenAllowed) {
  ScratchDir dir;
  DataOptions opts = options(100, 3);
  opts.truncate_long = true;
  std::string path = dir.write("long.jsonl", "{\"input_ids\": [1, 2, 3, 4, 5], \"labels\": [-100, 2, 3, 4, 5]}\n");
  TokenDataset data = TokenDataset::load(path, opts);
  EXPECT_EQ(data[0].input_ids, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(data[0].labels, (std::vector<int32_t>{-100, 2, 3}));
  EXPECT_EQ(data.real_tokens(), 3);
  EXPECT_EQ(data.dropped_tail_tokens(), 2);
}

TEST(Data, FlatFileCutsWindowsAndDropsTail) {
  ScratchDir dir;
  std::string path = dir.path("tokens.bin");
  write_token_file(path, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10});
  TokenDataset data = TokenDataset::load(path, options(100, 4));
  ASSERT_EQ(data.size(), 2u);
  EXPECT_EQ(data[0].input_ids, (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_EQ(data[1].input_ids, (std::vector<int32_t>{4, 5, 6, 7}));
  EXPECT_EQ(data[1].labels, data[1].input_ids);
  EXPECT_EQ(data.dropped_tail_tokens(), 3);
  EXPECT_EQ(data.real_tokens(), 8);
}

TEST(Data, FlatFileIsLittleEndianUint32) {
  ScratchDir dir;
  std::string path = dir.write("le.u32", std::string("\x01\x02\x00\x00\xff\x00\x00\x00", 8));
  TokenDataset data = TokenDataset::load(path, options(1000, 2));
  EXPECT_EQ(data[0].input_ids, (std::vector<int32_t>{0x0201, 0xff}));
}

TEST(Data, TokenJsonlRoundTrips) {
  ScratchDir dir;
  std::string path = dir.path("eval.jsonl");
  write_token_jsonl(path, {1, 2, 3, 4, 5, 6, 7}, 3);
  TokenDataset data = TokenDataset::load(path, options(100, 3));
  ASSERT_EQ(data.size(), 3u);
  EXPECT_EQ(data[1].input_ids, (std::vector<int32_t>{4, 5, 6}));
  EXPECT_EQ(data[2].input_ids, (std::vector<int32_t>{7, 0, 0}));
  EXPECT_EQ(data[2].labels, (std::vector<int32_t>{7, -100, -100}));
  EXPECT_EQ(data.real_tokens(), 7);
}

TEST(Data, FromSamplesDefaultsLabelsToInputs) {
  TokenDataset data = TokenDataset::from_samples({{{4, 5}, {}}}, options(100, 3));
  EXPECT_EQ(data[0].labels, (std::vector<int32_t>{4, 5, -100}));
}

TEST(Data, BatchLayoutIsRowMajor) {
  TokenDataset data = TokenDataset::from_samples({{{1, 2}, {-100, 2}}, {{3}, {}}}, options(100, 2));
  BatchSampler sampler(data, 2, 0, /*shuffle=*/false);
  Batch batch = sampler.next();
  EXPECT_EQ(batch.batch_size, 2);
  EXPECT_EQ(batch.seq_len, 2);
  EXPECT_EQ(batch.input_ids, (std::vector<int32_t>{1, 2, 3, 0}));
  EXPECT_EQ(batch.labels, (std::vector<int32_t>{-100, 2, 3, -100}));
}

TEST(Data, SamplerCoversEverySampleOncePerEpoch) {
  TokenDataset data = indexed_dataset(12);
  BatchSampler sampler(data, 4, 7);
  for (int epoch = 0; epoch < 3; ++epoch) {
    EXPECT_EQ(sampler.epoch(), epoch);
    EXPECT_EQ(sampler.position(), 0u);
    std::vector<int32_t> order = draw(sampler, 3);
    EXPECT_EQ(std::set<int32_t>(order.begin(), order.end()).size(), 12u) << "epoch " << epoch;
  }
}

TEST(Data, SamplerWrapsMidBatchIntoNextEpoch) {
  TokenDataset data = indexed_dataset(3);
  BatchSampler sampler(data, 2, 1);
  std::vector<int32_t> order = draw(sampler, 3);  // 6 rows = exactly 2 epochs
  EXPECT_EQ(std::set<int32_t>(order.begin(), order.begin() + 3).size(), 3u);
  EXPECT_EQ(std::set<int32_t>(order.begin() + 3, order.end()).size(), 3u);
  EXPECT_EQ(sampler.epoch(), 2);
  EXPECT_EQ(sampler.position(), 0u);
}

TEST(Data, SamplerOrderDependsOnlyOnSeed) {
  TokenDataset data = indexed_dataset(50);
  BatchSampler a(data, 10, 42), b(data, 10, 42), c(data, 10, 43);
  std::vector<int32_t> order_a = draw(a, 10), order_b = draw(b, 10), order_c = draw(c, 10);
  EXPECT_EQ(order_a, order_b);
  EXPECT_NE(order_a, order_c);
  EXPECT_NE(std::vector<int32_t>(order_a.begin(), order_a.begin() + 50),
            std::vector<int32_t>(order_a.begin() + 50, order_a.end()))
      << "each epoch should get a new permutation";
}

TEST(Data, SamplerOrderIsPinned) {
  // The shuffle is our own over mt19937_64, so this order must be the same on every platform and standard library.
  TokenDataset data = indexed_dataset(8);
  BatchSampler sampler(data, 8, 1234);
  std::vector<int32_t> order = draw(sampler, 1);
  std::vector<int32_t> sorted = order;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, (std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 7}));
  EXPECT_EQ(order, (std::vector<int32_t>{0, 2, 1, 6, 3, 7, 5, 4}));
}

TEST(Data, SamplerWithoutShuffleIsInOrder) {
  TokenDataset data = indexed_dataset(5);
  BatchSampler sampler(data, 5, 99, /*shuffle=*/false);
  EXPECT_EQ(draw(sampler, 2), (std::vector<int32_t>{0, 1, 2, 3, 4, 0, 1, 2, 3, 4}));
}

TEST(Data, SamplerSeekResumesTheSameStream) {
  TokenDataset data = indexed_dataset(7);
  BatchSampler uninterrupted(data, 3, 5);
  draw(uninterrupted, 4);  // 12 rows: epoch 1, position 5
  int64_t epoch = uninterrupted.epoch();
  size_t position = uninterrupted.position();
  EXPECT_EQ(epoch, 1);
  EXPECT_EQ(position, 5u);
  BatchSampler resumed(data, 3, 5);
  resumed.seek(epoch, position);
  EXPECT_EQ(draw(resumed, 5), draw(uninterrupted, 5));
  expect_error([&] { resumed.seek(0, 7); }, {"position 7", "7 samples"});
}

TEST(Data, SamplerRejectsBadBatchSize) {
  TokenDataset data = indexed_dataset(2);
  expect_error([&] { BatchSampler(data, 0, 1); }, {"batch_size is 0"});
}

TEST(Data, DemoTokensAreDeterministicAndInRange) {
  std::vector<int32_t> a = generate_demo_tokens(64, 20000, 3), b = generate_demo_tokens(64, 20000, 3);
  std::vector<int32_t> c = generate_demo_tokens(64, 20000, 4);
  ASSERT_EQ(a.size(), 20000u);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  for (int32_t id : a) ASSERT_TRUE(id >= 0 && id < 64) << id;
  EXPECT_TRUE(generate_demo_tokens(64, 0, 3).empty());
  for (int32_t id : generate_demo_tokens(1, 100, 3)) ASSERT_EQ(id, 0);
}

TEST(Data, DemoTokensHaveLearnableStructure) {
  // Predicting the most frequent next token given the two before must beat chance (1/64) by far.
  std::vector<int32_t> tokens = generate_demo_tokens(64, 200000, 11);
  std::map<std::pair<int32_t, int32_t>, std::map<int32_t, int>> next;
  for (size_t i = 2; i < tokens.size(); ++i) ++next[{tokens[i - 2], tokens[i - 1]}][tokens[i]];
  int64_t best = 0;
  for (const auto& [context, counts] : next) {
    int top = 0;
    for (const auto& [id, count] : counts) top = std::max(top, count);
    best += top;
  }
  double accuracy = static_cast<double>(best) / static_cast<double>(tokens.size() - 2);
  EXPECT_GT(accuracy, 0.4);
}

}  // namespace
}  // namespace moetune
