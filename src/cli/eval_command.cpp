// Why: `moetune eval`: the loss and perplexity of a checkpoint on token data, every sample counted exactly once, and
// optionally all logits written to a safetensors file for comparison with another implementation.
#include <cmath>
#include <memory>

#include "api/model.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "model/cpu_engine.h"
#include "train/data.h"

namespace moetune::cli {

namespace {

Args eval_args() {
  return Args("eval", "Loss and perplexity of a Hugging Face checkpoint on token data (fp32, CPU backend).",
              {
                  {"model", "DIR", "", "Hugging Face model folder (required)"},
                  {"data", "PATH", "", "token ids: flat uint32 file or JSONL {\"input_ids\": [...]} (required)"},
                  {"batch-size", "N", "8", "sequences per forward pass"},
                  {"seq-len", "N", "64", "tokens per sequence (flat files are cut into windows of this length; JSONL "
                                         "samples are padded to it)"},
                  {"truncate-long", "", "", "truncate JSONL samples longer than --seq-len instead of failing"},
                  {"dump-logits", "FILE", "", "write all logits (samples, seq-len, vocab) as F32 \"logits\" to this "
                                              ".safetensors file, with \"input_ids\" and \"labels\""},
              });
}

}  // namespace

int eval_command(int argc, char** argv) {
  Args args = eval_args();
  if (!args.parse(argc, argv)) return 0;
  if (!args.given("model") || !args.given("data")) throw UsageError{"moetune eval: --model and --data are required"};
  const int batch_size = static_cast<int>(args.integer("batch-size"));
  const int seq_len = static_cast<int>(args.integer("seq-len"));
  if (batch_size < 1 || seq_len < 2) throw UsageError{"moetune eval: --batch-size must be >= 1 and --seq-len >= 2"};

  Model model = Model::from_pretrained(args.text("model"));
  const ModelConfig& config = model.config();
  const TokenDataset data =
      TokenDataset::load(args.text("data"), DataOptions{config.vocab_size, seq_len, 0, args.flag("truncate-long")});
  const bool dump = args.given("dump-logits");
  std::vector<float> all_logits;
  std::vector<int64_t> all_ids, all_labels;
  if (dump) all_logits.reserve(data.size() * static_cast<size_t>(seq_len) * config.vocab_size);

  const ModelWeights weights = model.weights();
  std::unique_ptr<CpuEngine> engine;
  double ce_sum = 0.0;
  int64_t counted = 0;
  for (size_t begin = 0; begin < data.size(); begin += batch_size) {
    const int rows = static_cast<int>(std::min<size_t>(batch_size, data.size() - begin));
    if (!engine || engine->batch() != rows) engine = std::make_unique<CpuEngine>(config, rows, seq_len);
    std::vector<int32_t> ids, labels;
    for (int r = 0; r < rows; ++r) {
      const Sample& sample = data[begin + r];
      ids.insert(ids.end(), sample.input_ids.begin(), sample.input_ids.end());
      labels.insert(labels.end(), sample.labels.begin(), sample.labels.end());
    }
    const LossParts parts = engine->forward(weights, ids.data(), labels.data());
    ce_sum += parts.ce_sum;
    counted += parts.counted;
    if (dump) {
      all_logits.insert(all_logits.end(), engine->logits(),
                        engine->logits() + static_cast<size_t>(rows) * seq_len * config.vocab_size);
      all_ids.insert(all_ids.end(), ids.begin(), ids.end());
      all_labels.insert(all_labels.end(), labels.begin(), labels.end());
    }
  }
  if (counted == 0) fail(args.text("data"), ": no labelled positions to evaluate (every label is -100)");
  const double loss = ce_sum / static_cast<double>(counted);
  std::printf("samples %zu  tokens %lld  loss %.6f  perplexity %.4f\n", data.size(), static_cast<long long>(counted),
              loss, std::exp(loss));
  if (dump) {
    const int64_t samples = static_cast<int64_t>(data.size());
    write_safetensors(args.text("dump-logits"),
                      {{"logits", DType::F32, {samples, seq_len, config.vocab_size}, all_logits.data(), all_logits.size() * 4},
                       {"input_ids", DType::I64, {samples, seq_len}, all_ids.data(), all_ids.size() * 8},
                       {"labels", DType::I64, {samples, seq_len}, all_labels.data(), all_labels.size() * 8}});
    std::printf("logits written to %s\n", args.text("dump-logits").c_str());
  }
  return 0;
}

}  // namespace moetune::cli
