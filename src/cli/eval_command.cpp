// Why: `moetune eval`: the loss and perplexity of a checkpoint on held-out data — token ids, or text, prompt/completion
// and chat records read exactly as `moetune train` reads them (cli/data_setup.h) — every sample counted exactly once;
// on the CPU (fp32 reference) or the GPU (bf16 engine, the checkpoint streamed straight to the device), and on the CPU
// optionally all logits written to a safetensors file for comparison with another implementation.
#include <unistd.h>

#include <cmath>
#include <functional>
#include <memory>

#include "api/model.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "cli/data_setup.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "model/cpu_engine.h"
#include "train/data.h"

#ifdef MOETUNE_HAVE_CUDA
#include "gpu/gpu_trainer.h"
#endif

namespace moetune::cli {

namespace {

Args eval_args() {
  std::vector<Option> options = {
      {"model", "DIR", "", "Hugging Face model folder (required)"},
      {"data", "PATH", "", "held-out data, as `moetune train --data` takes it: JSONL of {\"text\"}, {\"prompt\", "
                           "\"completion\"} or {\"messages\"} records, a folder of *.jsonl, a cache from `moetune "
                           "tokenize`, or token ids (flat uint32 file, JSONL {\"input_ids\", \"labels\"}) (required)"},
  };
  const std::vector<Option> data = data_options();
  options.insert(options.end(), data.begin(), data.end());
  options.insert(options.end(), {
      {"batch-size", "N", "8", "sequences per forward pass"},
      {"seq-len", "N", "64", "tokens per sequence (flat files are cut into windows of this length; samples are padded "
                             "to it, or packed with --packing on)"},
      {"device", "cpu|cuda", "cpu", "cpu: the fp32 reference engine; cuda: the bf16 GPU engine"},
      {"dump-logits", "FILE", "", "write all logits (rows, seq-len, vocab) as F32 \"logits\" to this .safetensors "
                                  "file, with \"input_ids\" and \"labels\" (CPU only)"},
  });
  return Args("eval", "Loss and perplexity of a Hugging Face checkpoint on held-out text, instruction, chat or token "
                      "data (fp32 on the CPU, or bf16 on the GPU).",
              options);
}

// Forward passes over batches of the model: the loss parts of `batch`, whose first `rows` rows count (the rows after
// them pad a last, short batch to the engine's shape); `logits` (rows, seq_len, vocab) is filled when given.
using Evaluate = std::function<LossParts(const Batch& batch, int rows, std::vector<float>* logits)>;

// The first `rows` rows of a batch.
Batch first_rows(const Batch& batch, int rows) {
  if (rows == batch.batch_size) return batch;
  const size_t n = static_cast<size_t>(rows) * batch.seq_len;
  Batch cut{rows, batch.seq_len, {}, {}};
  cut.input_ids.assign(batch.input_ids.begin(), batch.input_ids.begin() + n);
  cut.labels.assign(batch.labels.begin(), batch.labels.begin() + n);
  if (batch.packed()) {
    cut.positions.assign(batch.positions.begin(), batch.positions.begin() + n);
    cut.doc_start.assign(batch.doc_start.begin(), batch.doc_start.begin() + n);
  }
  return cut;
}

Evaluate cpu_evaluator(const std::string& folder, std::unique_ptr<Model>& model) {
  model = std::make_unique<Model>(Model::from_pretrained(folder));
  auto engine = std::make_shared<std::unique_ptr<CpuEngine>>();
  Model* m = model.get();
  return [m, engine](const Batch& whole, int rows, std::vector<float>* logits) {
    const Batch batch = first_rows(whole, rows);
    if (!*engine || (*engine)->batch() != rows) *engine = std::make_unique<CpuEngine>(m->config(), rows, batch.seq_len);
    const LossParts parts = (*engine)->forward(m->weights(), batch.input_ids.data(), batch.labels.data(),
                                               batch.packed() ? batch.positions.data() : nullptr,
                                               batch.packed() ? batch.doc_start.data() : nullptr);
    if (logits) {
      const float* out = (*engine)->logits();
      logits->insert(logits->end(), out, out + static_cast<size_t>(rows) * batch.seq_len * m->config().vocab_size);
    }
    return parts;
  };
}

#ifdef MOETUNE_HAVE_CUDA
// The bf16 parameters only (no gradients or optimizer state), streamed from the checkpoint to the device. A short last
// batch is padded with rows that carry no label.
Evaluate gpu_evaluator(const std::string& folder, const ModelConfig& config, int batch_size, int seq_len, bool packing) {
  cuda::GpuOptions gpu;
  gpu.evaluate_only = true;
  if (packing) gpu.max_documents = batch_size * seq_len;  // at most one document per token
  auto trainer = std::make_shared<cuda::GpuTrainer>(config, nullptr, TrainOptions{}, gpu, batch_size, seq_len);
  LoadOptions load;
  load.progress = ::isatty(STDERR_FILENO) != 0;
  trainer->load_checkpoint(folder, load);
  return [trainer](const Batch& whole, int rows, std::vector<float>*) {
    Batch batch = whole;
    const size_t kept = static_cast<size_t>(rows) * batch.seq_len;
    std::fill(batch.labels.begin() + static_cast<long>(kept), batch.labels.end(), kIgnoreLabel);
    const cuda::GpuLoss loss = trainer->evaluate(batch);
    return LossParts{loss.ce_sum, loss.counted, loss.aux};
  };
}
#endif

}  // namespace

int eval_command(int argc, char** argv) {
  Args args = eval_args();
  if (!args.parse(argc, argv)) return 0;
  if (!args.given("model") || !args.given("data")) throw UsageError{"moetune eval: --model and --data are required"};
  const int batch_size = static_cast<int>(args.integer("batch-size"));
  const int seq_len = static_cast<int>(args.integer("seq-len"));
  if (batch_size < 1 || seq_len < 2) throw UsageError{"moetune eval: --batch-size must be >= 1 and --seq-len >= 2"};
  check_data_args(args, "moetune eval");
  const std::string device = args.text("device");
  if (device != "cpu" && device != "cuda") throw UsageError{"moetune eval: --device must be cpu or cuda"};
  const bool dump = args.given("dump-logits");
  if (device == "cuda" && dump)
    throw UsageError{"moetune eval: --dump-logits needs --device cpu (the GPU engine keeps no logits)"};

  const ModelConfig config = load_config(args.text("model"));
  const EvalData data = load_eval_data(args, config, batch_size, seq_len);
  std::unique_ptr<Model> model;
  Evaluate evaluate;
  if (device == "cpu") {
    evaluate = cpu_evaluator(args.text("model"), model);
  } else {
#ifdef MOETUNE_HAVE_CUDA
    evaluate = gpu_evaluator(args.text("model"), config, batch_size, seq_len, args.text("packing") == "on");
#else
    fail("this moetune was built without CUDA; --device cuda is not available");
#endif
  }

  const size_t rows = data.source.rows;
  std::vector<float> all_logits;
  std::vector<int64_t> all_ids, all_labels;
  if (dump) all_logits.reserve(rows * static_cast<size_t>(seq_len) * config.vocab_size);
  const std::unique_ptr<BatchStream> stream = data.source.stream();
  double ce_sum = 0.0;
  int64_t counted = 0;
  for (size_t begin = 0; begin < rows; begin += batch_size) {
    const int kept = static_cast<int>(std::min<size_t>(batch_size, rows - begin));
    const Batch batch = stream->next();  // rows past `kept` belong to the next pass over the data
    const LossParts parts = evaluate(batch, kept, dump ? &all_logits : nullptr);
    ce_sum += parts.ce_sum;
    counted += parts.counted;
    if (dump) {
      const size_t n = static_cast<size_t>(kept) * seq_len;
      all_ids.insert(all_ids.end(), batch.input_ids.begin(), batch.input_ids.begin() + static_cast<long>(n));
      all_labels.insert(all_labels.end(), batch.labels.begin(), batch.labels.begin() + static_cast<long>(n));
    }
  }
  if (counted == 0) fail(args.text("data"), ": no labelled positions to evaluate (every label is -100)");
  const double loss = ce_sum / static_cast<double>(counted);
  std::printf("samples %zu  rows %zu  tokens %lld  loss %.6f  perplexity %.4f\n", data.source.samples, rows,
              static_cast<long long>(counted), loss, std::exp(loss));
  if (dump) {
    const int64_t dumped = static_cast<int64_t>(rows);
    write_safetensors(args.text("dump-logits"),
                      {{"logits", DType::F32, {dumped, seq_len, config.vocab_size}, all_logits.data(), all_logits.size() * 4},
                       {"input_ids", DType::I64, {dumped, seq_len}, all_ids.data(), all_ids.size() * 8},
                       {"labels", DType::I64, {dumped, seq_len}, all_labels.data(), all_labels.size() * 8}});
    std::printf("logits written to %s\n", args.text("dump-logits").c_str());
  }
  return 0;
}

}  // namespace moetune::cli
