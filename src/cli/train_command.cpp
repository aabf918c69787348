// Why: `moetune train`. With no options it is the embedded demo: the built-in tiny Qwen3-MoE trained on a generated
// corpus (held-out part written beside it for `moetune eval`), on the CPU, in about a minute. Outputs in --output:
// metrics.jsonl (one record per step), loss.svg, final/ (a Hugging Face checkpoint, written atomically), run.json.
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "api/model.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "core/error.h"
#include "train/data.h"
#include "train/metrics.h"
#include "train/trainer.h"

#ifdef MOETUNE_HAVE_CUDA
#include "gpu/gpu_trainer.h"
#endif

namespace moetune::cli {

namespace fs = std::filesystem;

namespace {

Args train_args() {
  return Args("train", "Fine-tunes a MoE model (fp32, CPU backend) on token data and saves a Hugging Face checkpoint.",
              {
                  {"model", "DIR", "", "Hugging Face model folder (config.json + safetensors); omitted: the built-in tiny MoE"},
                  {"data", "PATH", "", "token ids: flat uint32 file or JSONL {\"input_ids\": [...], \"labels\": [...]}; "
                                      "omitted: a generated demo corpus"},
                  {"eval-data", "PATH", "", "held-out token data for a validation loss (demo: its generated held-out part)"},
                  {"output", "DIR", "runs/train", "output folder"},
                  {"steps", "N", "600", "optimizer steps"},
                  {"batch-size", "N", "8", "sequences per micro-batch"},
                  {"seq-len", "N", "128", "tokens per sequence"},
                  {"grad-accum", "N", "1", "micro-batches per optimizer step"},
                  {"lr", "X", "3e-3", "peak learning rate"},
                  {"schedule", "NAME", "cosine", "learning-rate schedule: constant, linear or cosine"},
                  {"warmup", "N", "20", "warm-up steps"},
                  {"weight-decay", "X", "0.0", "AdamW decoupled weight decay (matrices only)"},
                  {"beta1", "X", "0.9", "AdamW beta1"},
                  {"beta2", "X", "0.999", "AdamW beta2"},
                  {"eps", "X", "1e-8", "AdamW epsilon"},
                  {"max-grad-norm", "X", "1.0", "global gradient-norm clipping; 0 disables"},
                  {"aux-loss", "on|off|config", "config", "router load-balancing loss (config: on iff output_router_logits)"},
                  {"seed", "N", "0", "seed for data order (and initialisation of the built-in model)"},
                  {"eval-every", "N", "100", "steps between validation losses (with --eval-data or the demo)"},
                  {"truncate-long", "", "", "truncate JSONL samples longer than --seq-len instead of failing"},
                  {"save-dtype", "f32|bf16|f16", "f32", "dtype of the saved checkpoint"},
                  {"save-layout", "per-expert|fused", "per-expert", "expert tensor layout of the saved checkpoint"},
                  {"shuffle", "on|off", "on", "shuffle the training samples each epoch (off: file order)"},
                  {"device", "cpu|cuda", "cpu", "cpu: the fp32 reference engine; cuda: the bf16 GPU engine"},
                  {"recipe", "bf16|mixed", "bf16", "GPU precision: bf16 states, or fp32 master weights and states"},
                  {"fused-optimizer", "on|off", "off", "GPU: AdamW per gradient group inside the backward pass "
                                                        "(needs --max-grad-norm 0 and --grad-accum 1)"},
              });
}

DType parse_save_dtype(const std::string& text) {
  if (text == "f32") return DType::F32;
  if (text == "bf16") return DType::BF16;
  if (text == "f16") return DType::F16;
  throw UsageError{str("moetune train: --save-dtype must be f32, bf16 or f16, got \"", text, "\"")};
}

ExpertLayout parse_layout(const std::string& text) {
  if (text == "per-expert") return ExpertLayout::PerExpert;
  if (text == "fused") return ExpertLayout::Fused;
  throw UsageError{str("moetune train: --save-layout must be per-expert or fused, got \"", text, "\"")};
}

// Fails early (before any training) when the output folder cannot be written.
void prepare_output(const fs::path& output) {
  std::error_code error;
  fs::create_directories(output, error);
  if (error) fail(output.string(), ": cannot create output folder: ", error.message());
  const fs::path probe = output / ".write-test";
  std::ofstream(probe) << "ok";
  if (!fs::exists(probe)) fail(output.string(), ": output folder is not writable");
  fs::remove(probe);
}

// The engine a run trains on: the CPU reference Trainer or the GPU trainer, behind the three calls the loop needs.
class Runner {
 public:
  virtual ~Runner() = default;
  virtual StepStats step(const std::vector<Batch>& micro_batches) = 0;
  virtual LossParts evaluate(const Batch& batch) = 0;
  virtual void copy_parameters_to(Model& model) = 0;
};

class CpuRunner : public Runner {
 public:
  CpuRunner(Model& model, const TrainOptions& options, int batch_size, int seq_len)
      : trainer_(model, options, batch_size, seq_len) {}
  StepStats step(const std::vector<Batch>& micro_batches) override { return trainer_.step(micro_batches); }
  LossParts evaluate(const Batch& batch) override { return trainer_.evaluate(batch); }
  void copy_parameters_to(Model&) override {}  // trains the model's own buffer

 private:
  Trainer trainer_;
};

#ifdef MOETUNE_HAVE_CUDA
class GpuRunner : public Runner {
 public:
  GpuRunner(const Model& model, const TrainOptions& options, const cuda::GpuOptions& gpu, int batch_size, int seq_len)
      : trainer_(model.config(), model.params(), options, gpu, batch_size, seq_len) {}
  StepStats step(const std::vector<Batch>& micro_batches) override {
    if (micro_batches.size() != 1) fail("--device cuda does not support gradient accumulation yet (use --grad-accum 1)");
    return trainer_.step(micro_batches.front());
  }
  LossParts evaluate(const Batch& batch) override {
    const cuda::GpuLoss loss = trainer_.evaluate(batch);
    return {loss.ce_sum, loss.counted, loss.aux};
  }
  void copy_parameters_to(Model& model) override {
    const std::vector<float> params = trainer_.download_params();
    std::copy(params.begin(), params.end(), model.params());
  }

 private:
  cuda::GpuTrainer trainer_;
};
#endif

std::unique_ptr<Runner> make_runner(const Args& args, Model& model, const TrainOptions& options, int batch_size,
                                    int seq_len) {
  const std::string device = args.text("device");
  if (device == "cpu") return std::make_unique<CpuRunner>(model, options, batch_size, seq_len);
  if (device != "cuda") throw UsageError{"moetune train: --device must be cpu or cuda"};
#ifdef MOETUNE_HAVE_CUDA
  cuda::GpuOptions gpu;
  gpu.recipe = cuda::parse_recipe(args.text("recipe"));
  gpu.fused_optimizer = args.text("fused-optimizer") == "on";
  return std::make_unique<GpuRunner>(model, options, gpu, batch_size, seq_len);
#else
  fail("this moetune was built without CUDA; --device cuda is not available");
#endif
}

double mean_eval_loss(Runner& runner, const TokenDataset& data, int batch_size, int max_batches) {
  BatchSampler sampler(data, batch_size, 0, false);
  double ce_sum = 0.0;
  int64_t counted = 0;
  const size_t batches = std::max<size_t>(1, std::min<size_t>(max_batches, data.size() / batch_size));
  for (size_t i = 0; i < batches; ++i) {
    const LossParts parts = runner.evaluate(sampler.next());
    ce_sum += parts.ce_sum;
    counted += parts.counted;
  }
  return counted > 0 ? ce_sum / static_cast<double>(counted) : 0.0;
}

std::string format_duration(double seconds) {
  const long total = std::lround(seconds);
  return str(total / 60, ":", (total % 60 < 10 ? "0" : ""), total % 60);
}

}  // namespace

int train_command(int argc, char** argv) {
  Args args = train_args();
  if (!args.parse(argc, argv)) return 0;

  const int batch_size = static_cast<int>(args.integer("batch-size"));
  const int seq_len = static_cast<int>(args.integer("seq-len"));
  const long steps = args.integer("steps");
  const int grad_accum = static_cast<int>(args.integer("grad-accum"));
  const uint64_t seed = static_cast<uint64_t>(args.integer("seed"));
  if (batch_size < 1 || seq_len < 2 || steps < 1 || grad_accum < 1)
    throw UsageError{"moetune train: --batch-size, --steps and --grad-accum must be >= 1 and --seq-len >= 2"};
  const long eval_every = args.integer("eval-every");
  if (eval_every < 1 || args.integer("warmup") < 0)
    throw UsageError{"moetune train: --eval-every must be >= 1 and --warmup >= 0"};
  const DType save_dtype = parse_save_dtype(args.text("save-dtype"));
  const ExpertLayout save_layout = parse_layout(args.text("save-layout"));
  const fs::path output = args.text("output");
  prepare_output(output);

  Model model = args.given("model") ? Model::from_pretrained(args.text("model"))
                                    : Model::from_config(builtin_tiny_config(), seed);
  const ModelConfig& config = model.config();
  std::fprintf(stderr, "model: %s (%s), %zu parameters, %d layers, %d experts top-%d\n",
               args.given("model") ? args.text("model").c_str() : "built-in tiny MoE", config.architecture.c_str(),
               model.parameter_count(), config.num_layers, config.num_experts, config.top_k);

  const DataOptions data_options{config.vocab_size, seq_len, 0, args.flag("truncate-long")};
  std::string train_path = args.text("data"), eval_path = args.text("eval-data");
  if (!args.given("data")) {
    const std::vector<int32_t> corpus = generate_demo_tokens(config.vocab_size, 400000, 1234);
    const size_t held_out = corpus.size() / 10;
    train_path = (output / "train_tokens.bin").string();
    write_token_file(train_path, std::vector<int32_t>(corpus.begin(), corpus.end() - static_cast<long>(held_out)));
    if (eval_path.empty()) {
      eval_path = (output / "eval_tokens.jsonl").string();
      write_token_jsonl(eval_path, std::vector<int32_t>(corpus.end() - static_cast<long>(held_out), corpus.end()), seq_len);
    }
    std::fprintf(stderr, "data: generated demo corpus, %zu training tokens -> %s\n", corpus.size() - held_out,
                 train_path.c_str());
  }
  const TokenDataset train_data = TokenDataset::load(train_path, data_options);
  if (train_data.size() < static_cast<size_t>(batch_size))
    fail(train_path, ": ", train_data.size(), " sequences of ", seq_len, " tokens, fewer than one batch of ", batch_size);
  std::unique_ptr<TokenDataset> eval_data;
  if (!eval_path.empty()) eval_data = std::make_unique<TokenDataset>(TokenDataset::load(eval_path, data_options));

  TrainOptions options;
  options.total_steps = steps;
  options.lr = args.number("lr");
  options.warmup_steps = args.integer("warmup");
  options.schedule = parse_schedule(args.text("schedule"));
  options.beta1 = args.number("beta1");
  options.beta2 = args.number("beta2");
  options.eps = args.number("eps");
  options.weight_decay = args.number("weight-decay");
  options.max_grad_norm = args.number("max-grad-norm");
  const std::string aux = args.text("aux-loss");
  if (aux != "on" && aux != "off" && aux != "config")
    throw UsageError{"moetune train: --aux-loss must be on, off or config"};
  options.aux_loss = aux == "on" || (aux == "config" && config.output_router_logits);

  const std::string shuffle = args.text("shuffle");
  if (shuffle != "on" && shuffle != "off") throw UsageError{"moetune train: --shuffle must be on or off"};
  std::unique_ptr<Runner> runner = make_runner(args, model, options, batch_size, seq_len);
  BatchSampler sampler(train_data, batch_size, seed, shuffle == "on");
  MetricsLog metrics((output / "metrics.jsonl").string());
  std::vector<double> step_axis, losses, eval_axis, eval_losses;

  ProgressLine progress(static_cast<int>(steps));
  const auto start = std::chrono::steady_clock::now();
  int64_t tokens_seen = 0;
  for (long s = 0; s < steps; ++s) {
    std::vector<Batch> micro;
    for (int m = 0; m < grad_accum; ++m) micro.push_back(sampler.next());
    const StepStats stats = runner->step(micro);
    tokens_seen += stats.tokens;
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double tokens_per_s = tokens_seen / std::max(elapsed, 1e-9);
    nlohmann::json record = {{"step", stats.step}, {"loss", stats.loss},       {"ce_loss", stats.ce_loss},
                             {"aux_loss", stats.aux_loss}, {"grad_norm", stats.grad_norm}, {"lr", stats.lr},
                             {"tokens", tokens_seen}, {"tokens_per_s", tokens_per_s}, {"elapsed_s", elapsed},
                             {"epoch", sampler.epoch()}};
    if (eval_data && (stats.step % eval_every == 0 || stats.step == steps)) {
      const double eval_loss = mean_eval_loss(*runner, *eval_data, batch_size, 8);
      record["eval_loss"] = eval_loss;
      eval_axis.push_back(static_cast<double>(stats.step));
      eval_losses.push_back(eval_loss);
    }
    metrics.write(record);
    step_axis.push_back(static_cast<double>(stats.step));
    losses.push_back(stats.loss);
    progress.update(static_cast<int>(stats.step), stats.loss, tokens_per_s, elapsed / stats.step * (steps - stats.step));
  }
  progress.finish();
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  write_loss_curve_svg((output / "loss.svg").string(), step_axis, losses, "moetune train: loss", eval_axis, eval_losses);
  runner->copy_parameters_to(model);
  SaveOptions save;
  save.dtype = save_dtype;
  save.expert_layout = save_layout;
  model.save_pretrained((output / "final").string(), save);

  const nlohmann::json summary = {
      {"model", args.given("model") ? args.text("model") : "built-in tiny MoE"}, {"data", train_path},
      {"steps", steps}, {"batch_size", batch_size}, {"seq_len", seq_len}, {"grad_accum", grad_accum},
      {"first_loss", losses.front()}, {"final_loss", losses.back()}, {"elapsed_s", elapsed},
      {"tokens_per_s", tokens_seen / elapsed}, {"checkpoint", (output / "final").string()}};
  std::ofstream((output / "run.json")) << summary.dump(2) << "\n";
  std::fprintf(stderr, "loss %.4f -> %.4f in %s (%.0f tokens/s)%s\n", losses.front(), losses.back(),
               format_duration(elapsed).c_str(), tokens_seen / elapsed,
               eval_losses.empty() ? "" : str(", eval loss ", eval_losses.back()).c_str());
  std::fprintf(stderr, "saved %s, %s, %s\n", (output / "final").c_str(), (output / "metrics.jsonl").c_str(),
               (output / "loss.svg").c_str());
  return 0;
}

}  // namespace moetune::cli
