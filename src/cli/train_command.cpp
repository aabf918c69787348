// Why: `moetune train`. With no options it is the embedded demo: the built-in tiny Qwen3-MoE trained on a generated
// corpus (held-out part written beside it for `moetune eval`), on the CPU, in about a minute. --data takes token ids
// (train/data.h) or text, prompt/completion and chat records, tokenized with the model's tokenizer.json and chat
// template into a reusable cache and batched padded or packed (src/dataset/, text_dataset.h). The engine is the CPU
// reference or the GPU one (train_runner.h). Outputs in --output:
// metrics.jsonl (one record per step), loss.svg, final/ (a Hugging Face checkpoint, written atomically), run.json, and
// with --save-every checkpoints/step-<N>/ (weights + optimizer state + data position, train/train_state.h).
// --resume continues such a checkpoint bit-identically (on either device; a checkpoint of one device resumes on the
// other within its precision): the run's options come from the checkpoint, a conflicting one given again is an error,
// metrics.jsonl is cut back to the checkpoint's step and appended to. SIGINT/SIGTERM finish the current step, write a
// checkpoint and exit with 128 + the signal; a second one aborts at once.
// With --device cuda and --model, the checkpoint streams straight to the GPU (no fp32 host copy of the model); a host
// fp32 copy of this GPU's arenas is made only to write checkpoints and the final model.
// Several GPUs (one process each: moetune launch, torchrun, srun, mpirun; docs/PARALLEL.md): --ep/--dp lay the ranks
// out, each rank loads its experts and trains its rows of every global batch (world x --batch-size rows, data_setup.h),
// the GPU trainer sums gradients and losses over the right ranks, and rank 0 alone prints and logs. Checkpoints and the
// final model are written cooperatively (io/checkpoint_writer.h): each rank of the first DP replica writes its experts'
// weights and moments, and a share of the replicated ones, into the one full Hugging Face folder that rank 0 creates,
// completes and renames, so no host holds more than its own GPU's arenas (the output folder must then be on a
// filesystem every node sees). A checkpoint records the global batch, so it resumes on any number of GPUs (each rank
// reading only its experts and the replicated tensors of it, train/train_state.h) or on the CPU. --zero 1 shards the
// optimizer state over the ranks sharing each parameter (ZeRO-1, gpu/gpu_trainer.h); checkpoints still hold the full
// state (every rank takes part in gathering its replica's shards), so --zero, like --ep/--dp, is chosen anew by each
// launch.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <thread>
#include <utility>

#include "api/model.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "cli/data_setup.h"
#include "cli/train_runner.h"
#include "cli/rank_slices.h"
#include "core/error.h"
#include "parallel/expert_shard.h"
#include "parallel/topology.h"
#include "train/data.h"
#include "train/metrics.h"
#include "train/train_state.h"
#include "train/trainer.h"

#ifdef MOETUNE_HAVE_CUDA
#include "gpu/gpu_trainer.h"
#include "parallel/nccl_comm.h"
#endif

namespace moetune::cli {

namespace fs = std::filesystem;

namespace {

std::vector<Option> train_options() {
  std::vector<Option> options = {
    {"model", "DIR", "", "Hugging Face model folder (config.json + safetensors); omitted: the built-in tiny MoE"},
    {"data", "PATH", "", "training data: JSONL of {\"text\"}, {\"prompt\", \"completion\"} or {\"messages\"} records, a "
                        "folder of *.jsonl (read in name order), a cache from `moetune tokenize`, or token ids (flat "
                        "uint32 file, JSONL {\"input_ids\", \"labels\"}); omitted: a generated demo corpus"},
    {"val-fraction", "X", "0", "share of the samples held out for the validation loss (a hash of the sample index "
                               "and --seed picks them)"},
    {"eval-data", "PATH", "", "held-out data for a validation loss, same format as --data (demo: its generated "
                              "held-out part)"},
    {"eval-batches", "N", "8", "batches per validation loss (at most the validation data)"},
    {"epochs", "N", "0", "train for N passes over the training samples (sets --steps; 0: use --steps)"},
    {"output", "DIR", "runs/train", "output folder"},
    {"steps", "N", "600", "optimizer steps"},
    {"batch-size", "N", "8", "sequences per micro-batch on each GPU: a run of W processes trains W x N sequences per "
                            "micro-batch (rank r the r-th N of each)"},
    {"seq-len", "N", "128", "tokens per sequence"},
    {"grad-accum", "N", "1", "micro-batches per optimizer step"},
    {"lr", "X", "3e-3", "peak learning rate"},
    {"schedule", "NAME", "cosine", "learning-rate schedule: constant, linear or cosine"},
    {"schedule-steps", "N", "0", "length of the learning-rate schedule, >= --steps unless constant "
                                 "(0: --steps); longer lets a run stop early and be resumed further"},
    {"warmup", "N", "20", "warm-up steps"},
    {"weight-decay", "X", "0.0", "AdamW decoupled weight decay (matrices only)"},
    {"beta1", "X", "0.9", "AdamW beta1"},
    {"beta2", "X", "0.999", "AdamW beta2"},
    {"eps", "X", "1e-8", "AdamW epsilon"},
    {"max-grad-norm", "X", "1.0", "global gradient-norm clipping; 0 disables"},
    {"aux-loss", "on|off|config", "config", "router load-balancing loss (config: on iff output_router_logits)"},
    {"seed", "N", "0", "seed for data order (and initialisation of the built-in model)"},
    {"eval-every", "N", "100", "steps between validation losses (with --eval-data, --val-fraction or the demo)"},
    {"save-dtype", "auto|f32|bf16|f16", "auto", "dtype of the saved final model (auto: f32 with --device cpu, bf16 "
                                                "with --device cuda; checkpoints for --resume are always f32)"},
    {"save-layout", "per-expert|fused", "per-expert", "expert tensor layout of the saved checkpoint"},
    {"shuffle", "on|off", "on", "shuffle the training samples each epoch (off: file order)"},
    {"device", "cpu|cuda", "cpu", "cpu: the fp32 reference engine; cuda: the bf16 GPU engine"},
    {"recipe", "bf16|mixed", "bf16", "GPU precision: bf16 states, or fp32 master weights and states"},
    {"fused-optimizer", "on|off", "off", "GPU: AdamW per gradient group inside the backward pass "
                                          "(needs --max-grad-norm 0 and --grad-accum 1); on one GPU with --recipe bf16 "
                                          "and sm90/moetune expert GEMMs, the routed experts are stepped inside "
                                          "their weight-gradient GEMMs"},
    {"grouped-gemm", "sm90|moetune|cublas", "sm90", "GPU: implementation of the experts' grouped GEMMs (Hopper "
                                                       "wgmma, portable mma.sync, cuBLAS grouped)"},
    {"recompute", "on|off", "off", "GPU: per-layer activation recompute (keep only each layer's input; less memory, "
                                   "one more forward per layer)"},
    {"ep", "N", "1", "expert parallelism: experts split over N GPUs (one process per GPU: moetune launch --nproc, "
                     "torchrun, srun or mpirun; --device cuda)"},
    {"dp", "N", "0", "data parallelism over N groups of --ep GPUs (0: the processes / --ep)"},
    {"expert-capacity", "X", "0", "with --ep: rows a GPU's experts can take, in multiples of the rows it routes (0: "
                                  "the worst case, --ep)"},
    {"ep-exchange", "nccl|nvlink", "nccl", "with --ep: how rows move between GPUs: NCCL send/receive, or one kernel "
                                           "writing into the owner's buffers over NVLink"},
    {"ep-overlap", "on|off", "on", "with --ep: in the backward pass, return the experts' input gradients to their GPUs "
                                   "while the experts' gate_up weight gradient runs (sm90 and moetune expert GEMMs; "
                                   "same numbers); off: one after the other"},
    {"zero", "0|1", "0", "GPU, several processes: 1 shards the AdamW moments (and --recipe mixed's fp32 master weights) "
                         "over the GPUs sharing each parameter (ZeRO-1: the world for replicated ones, the --dp group "
                         "for experts), so optimizer memory per GPU falls with their number; same math, checkpoints "
                         "still full. No effect with one process"},
    {"save-every", "N", "0", "steps between checkpoints OUTPUT/checkpoints/step-N (weights, optimizer "
                             "state, data position; for --resume); 0: off. SIGINT/SIGTERM always write one"},
    {"keep-last", "K", "3", "checkpoints kept, older ones deleted once a new one is complete; 0: all"},
    {"resume", "DIR", "", "continue a run from a checkpoint: a step-N folder, or OUTPUT/checkpoints (its "
                          "latest); the run's options are the checkpoint's, --steps, --device etc. may change"},
  };
  const std::vector<Option> data = data_options();
  options.insert(options.begin() + 2, data.begin(), data.end());
  return options;
}

Args train_args() {
  return Args("train",
              "Fine-tunes a MoE model on text, instruction (prompt/completion) or chat data, or on token ids, and saves a "
              "Hugging Face checkpoint. Text is tokenized with the model's tokenizer.json and chats rendered with its "
              "chat template, as Transformers does; the loss covers completions and assistant turns only.",
              train_options());
}

DType parse_save_dtype(const std::string& text, const std::string& device) {
  if (text == "auto") return device == "cuda" ? DType::BF16 : DType::F32;
  if (text == "f32") return DType::F32;
  if (text == "bf16") return DType::BF16;
  if (text == "f16") return DType::F16;
  throw UsageError{str("moetune train: --save-dtype must be auto, f32, bf16 or f16, got \"", text, "\"")};
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

// This process's place in the run: one process (the CPU engine, or one GPU), or a rank of several GPUs with its
// EP x DP layout, its communicators and its block of experts.
double mean_eval_loss(Runner& runner, const EvalSource& data, int batch_size, int max_batches) {
  const std::unique_ptr<BatchStream> sampler = data.stream();
  double ce_sum = 0.0;
  int64_t counted = 0;
  const size_t batches = std::max<size_t>(1, std::min<size_t>(max_batches, data.rows / batch_size));
  for (size_t i = 0; i < batches; ++i) {
    const LossParts parts = runner.evaluate(sampler->next());
    ce_sum += parts.ce_sum;
    counted += parts.counted;
  }
  return counted > 0 ? ce_sum / static_cast<double>(counted) : 0.0;
}

std::string format_duration(double seconds) {
  const long total = std::lround(seconds);
  return str(total / 60, ":", (total % 60 < 10 ? "0" : ""), total % 60);
}

// --- SIGINT / SIGTERM -------------------------------------------------------------------------------------------------

volatile std::sig_atomic_t g_stop_signal = 0;

// First signal: note it (the loop checks after each step). Second: abort at once, by the signal's default action.
void on_stop_signal(int signal) {
  if (g_stop_signal != 0) {
    static const char kAbort[] = "\nmoetune train: second signal, aborting now\n";
    [[maybe_unused]] const ssize_t written = ::write(STDERR_FILENO, kAbort, sizeof kAbort - 1);
    std::signal(signal, SIG_DFL);
    std::raise(signal);  // delivered when this handler returns
    return;
  }
  g_stop_signal = signal;
  static const char kNote[] =
      "\nmoetune train: stopping after this step to write a checkpoint (send the signal again to abort now)\n";
  [[maybe_unused]] const ssize_t written = ::write(STDERR_FILENO, kNote, sizeof kNote - 1);
}

// The handlers, installed for the training loop only (the library installs none).
class StopSignals {
 public:
  StopSignals() {
    g_stop_signal = 0;
    struct sigaction action {};
    action.sa_handler = on_stop_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    sigaction(SIGINT, &action, &previous_int_);
    sigaction(SIGTERM, &action, &previous_term_);
  }
  ~StopSignals() {
    sigaction(SIGINT, &previous_int_, nullptr);
    sigaction(SIGTERM, &previous_term_, nullptr);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
  int caught() const { return g_stop_signal; }

 private:
  struct sigaction previous_int_ {};
  struct sigaction previous_term_ {};
};

// --- resuming ---------------------------------------------------------------------------------------------------------

// Options that may differ when resuming: they change where the run stops, what it writes and how it evaluates, not what
// it trains. Every other option is the checkpoint's; given again with another value it is an error. --batch-size is
// rows per GPU: a resumed run keeps the checkpoint's global batch (rows per micro-batch over every rank), split over
// its own number of processes (resumed_batch_size).
// The engine (device, precision recipe, fused optimizer step, grouped GEMMs) may change too: a checkpoint is
// device-neutral, and changing the engine changes the numbers only within its precision.
const std::set<std::string> kChangeableOnResume = {"steps",      "output",      "eval-data",  "eval-every",
                                                   "save-dtype", "save-layout", "save-every", "keep-last",
                                                   "resume",     "eval-batches", "threads",   "cache",
                                                   "epochs",     "device",      "recipe",     "fused-optimizer",
                                                   "grouped-gemm", "recompute",  "expert-capacity", "ep-exchange",
                                                   "ep-overlap"};
// Options of the launch rather than of the run: never taken from the checkpoint (a run resumes on any number of GPUs,
// with or without ZeRO, whose checkpoints hold the full optimizer state).
const std::set<std::string> kPerLaunch = {"ep", "dp", "zero"};
const std::set<std::string> kPathOptions = {"model", "data", "eval-data", "output", "tokenizer"};

std::string absolute_path(const std::string& path) {
  return path.empty() ? path : fs::absolute(path).lexically_normal().string();
}

// This run's options as a checkpoint records them: each option's effective text, paths made absolute ("" for an
// absent --model/--data/--eval-data/--tokenizer or flag), --steps (from --epochs) and --schedule-steps resolved.
nlohmann::json recorded_options(const Args& args, long steps, long schedule_steps) {
  nlohmann::json recorded = nlohmann::json::object();
  for (const Option& option : train_options()) {
    if (option.name == "resume") continue;
    std::string value = option.value_name.empty() ? (args.flag(option.name) ? "1" : "") : args.text(option.name);
    if (option.name == "output") value = absolute_path(value);
    else if (kPathOptions.count(option.name)) value = args.given(option.name) ? absolute_path(value) : "";
    if (option.name == "schedule-steps") value = std::to_string(schedule_steps);
    if (option.name == "steps") value = std::to_string(steps);
    recorded[option.name] = value;
  }
  return recorded;
}

bool same_value(const Option& option, const std::string& a, const std::string& b) {
  if (kPathOptions.count(option.name)) return absolute_path(a) == absolute_path(b);
  if (option.value_name == "N" || option.value_name == "X") {
    char* end_a = nullptr;
    char* end_b = nullptr;
    const double x = std::strtod(a.c_str(), &end_a), y = std::strtod(b.c_str(), &end_b);
    if (!a.empty() && !b.empty() && *end_a == '\0' && *end_b == '\0') return x == y;
  }
  return a == b;
}

std::string describe_recorded(const Option& option, const std::string& value) {
  if (!value.empty()) return option.value_name.empty() ? "--" + option.name : "--" + option.name + " " + value;
  if (option.name == "model") return "the built-in tiny MoE (no --model)";
  if (option.name == "data") return "the generated demo corpus (no --data)";
  return "no --" + option.name;
}

// The run folder a step folder belongs to (RUN/checkpoints/step-N), "" when it is elsewhere.
std::string run_folder_of(const std::string& step_folder) {
  const fs::path folder = fs::absolute(step_folder).lexically_normal();
  return folder.parent_path().filename() == "checkpoints" ? folder.parent_path().parent_path().string() : "";
}

// --batch-size of a run resumed on `world` processes: the checkpoint's global batch (CheckpointRecord::batch_size, rows
// per micro-batch over every rank) split evenly over them.
std::string resumed_batch_size(const Args& given, const CheckpointInfo& checkpoint, int world) {
  const long global = checkpoint.record.batch_size;
  if (given.given("batch-size")) {
    const long rows = given.integer("batch-size");
    if (rows * world != global)
      throw UsageError{str("moetune train: --batch-size ", rows, " on ", world, world == 1 ? " process" : " processes",
                           " is ", rows * world, " rows per micro-batch, but the checkpoint ", checkpoint.folder,
                           " trained with ", global, "; leave --batch-size out when resuming")};
    return given.text("batch-size");
  }
  if (global % world != 0)
    throw UsageError{str("moetune train: the checkpoint ", checkpoint.folder, " trained with ", global,
                         " rows per micro-batch, which ", world, " processes cannot share evenly; resume on a number "
                         "of GPUs that divides ", global)};
  return std::to_string(global / world);
}

// The options of a resumed run: the checkpoint's, with the given ones that may change (and --output defaulting to the
// checkpoint's run folder), parsed as a command line of their own. world: the processes of this run.
Args resumed_args(const Args& given, const CheckpointInfo& checkpoint, int world) {
  const nlohmann::json& run = checkpoint.record.run;
  if (!run.contains("options") || !run["options"].is_object())
    fail(checkpoint.folder, "/", kTrainStateJson, ": field \"run.options\" is missing (not written by moetune train)");
  const nlohmann::json& saved = run["options"];
  const std::string run_folder = run_folder_of(checkpoint.folder);
  std::vector<std::string> words;
  for (const Option& option : train_options()) {
    if (option.name == "resume") continue;
    const bool recorded = saved.contains(option.name) && saved[option.name].is_string();
    const std::string saved_value = recorded ? saved[option.name].get<std::string>() : option.default_text;
    std::string value = saved_value;
    if (option.name == "batch-size") {
      value = resumed_batch_size(given, checkpoint, world);
    } else if (kPerLaunch.count(option.name)) {
      value = given.given(option.name) ? given.text(option.name) : option.default_text;
    } else if (given.given(option.name)) {
      value = option.value_name.empty() ? "1" : given.text(option.name);
      if (!kChangeableOnResume.count(option.name) && !same_value(option, value, saved_value))
        throw UsageError{str("moetune train: --", option.name, option.value_name.empty() ? "" : " " + value,
                             " conflicts with the checkpoint ", checkpoint.folder, ", trained with ",
                             describe_recorded(option, saved_value), "; leave it out when resuming")};
    } else if (option.name == "output" && !run_folder.empty()) {
      value = run_folder;
    }
    if (value.empty()) continue;
    words.push_back(option.value_name.empty() ? "--" + option.name : "--" + option.name + "=" + value);
  }
  words.push_back("--resume=" + checkpoint.folder);
  std::vector<char*> argv;
  for (std::string& word : words) argv.push_back(word.data());
  Args args = train_args();
  args.parse(static_cast<int>(argv.size()), argv.data());
  return args;
}

// The metrics records of steps 1..step, read from `source` (a killed run may have logged steps past its checkpoint, and
// cut its last line short); `destination` is rewritten (atomically) to hold exactly those, and the run appends to it.
std::vector<nlohmann::json> restore_metrics(const fs::path& source, const fs::path& destination, long step) {
  std::vector<nlohmann::json> kept;
  std::ifstream in(source);
  if (!in) std::fprintf(stderr, "note: %s not found; metrics.jsonl starts at step %ld\n", source.c_str(), step + 1);
  for (std::string line; std::getline(in, line);) {
    nlohmann::json record = nlohmann::json::parse(line, nullptr, false);
    if (record.is_object() && record.contains("step") && record["step"].is_number_integer() &&
        record["step"].get<long>() <= step)
      kept.push_back(std::move(record));
  }
  const fs::path staging = destination.string() + ".tmp";
  {
    std::ofstream out(staging, std::ios::trunc);
    for (const nlohmann::json& record : kept) out << record.dump() << '\n';
    out.close();
    if (!out) fail(staging.string(), ": cannot write");
  }
  std::error_code error;
  fs::rename(staging, destination, error);
  if (error) fail(destination.string(), ": cannot replace: ", error.message());
  return kept;
}

// MOETUNE_TEST_PAUSE_IN_SAVE=<ms>: sleep after each file of a checkpoint, so tests can kill a save half-way.
std::function<void(const std::string&)> test_pause_in_save() {
  const char* text = std::getenv("MOETUNE_TEST_PAUSE_IN_SAVE");
  const long ms = text ? std::strtol(text, nullptr, 10) : 0;
  if (ms <= 0) return {};
  return [ms](const std::string&) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); };
}

}  // namespace

int train_command(int argc, char** argv) {
  Args args = train_args();
  if (!args.parse(argc, argv)) return 0;

  // Who this process is: one of several (moetune launch, torchrun, srun, mpirun) or the only one.
  const parallel::ProcessGroupInfo group = parallel::detect_process_group();
  const int world = group.world_size;
  const bool rank0 = group.rank == 0;  // the one that prints, logs and writes

  // --resume: the checkpoint is opened and validated first (its record, and every tensor header of its weights and
  // optimizer state; no values yet), and its options become this run's (see resumed_args). Its values are read once
  // this rank's layout is known (below).
  std::optional<CheckpointInfo> checkpoint;
  if (args.given("resume")) {
    checkpoint.emplace(open_checkpoint(args.text("resume")));
    args = resumed_args(args, *checkpoint, world);
  }
  const long start_step = checkpoint ? checkpoint->record.step : 0;

  const int batch_size = static_cast<int>(args.integer("batch-size"));
  const int seq_len = static_cast<int>(args.integer("seq-len"));
  const long epochs = args.integer("epochs");
  const bool steps_from_epochs = epochs > 0 && !args.given("steps");
  long steps = args.integer("steps");
  const int grad_accum = static_cast<int>(args.integer("grad-accum"));
  const uint64_t seed = static_cast<uint64_t>(args.integer("seed"));
  if (batch_size < 1 || seq_len < 2 || steps < 1 || grad_accum < 1 || epochs < 0)
    throw UsageError{"moetune train: --batch-size, --steps and --grad-accum must be >= 1, --seq-len >= 2, --epochs >= 0"};
  if (epochs > 0 && args.given("steps") && !checkpoint)
    throw UsageError{"moetune train: give --steps or --epochs, not both"};
  const long eval_every = args.integer("eval-every");
  if (eval_every < 1 || args.integer("warmup") < 0 || args.integer("eval-batches") < 1)
    throw UsageError{"moetune train: --eval-every and --eval-batches must be >= 1 and --warmup >= 0"};
  const long save_every = args.integer("save-every");
  const long keep_last = args.integer("keep-last");
  if (save_every < 0 || keep_last < 0 || args.integer("schedule-steps") < 0)
    throw UsageError{"moetune train: --save-every, --keep-last and --schedule-steps must be >= 0"};
  const Schedule schedule = parse_schedule(args.text("schedule"));
  if (args.text("shuffle") != "on" && args.text("shuffle") != "off")
    throw UsageError{"moetune train: --shuffle must be on or off"};
  check_data_args(args, "moetune train");
  const double val_fraction = args.number("val-fraction");
  if (val_fraction < 0 || val_fraction >= 1) throw UsageError{"moetune train: --val-fraction must be in [0, 1)"};
  const std::string device = args.text("device");
  if (device != "cpu" && device != "cuda") throw UsageError{"moetune train: --device must be cpu or cuda"};
  if (args.text("recompute") != "on" && args.text("recompute") != "off")
    throw UsageError{"moetune train: --recompute must be on or off"};
  const long ep = args.integer("ep"), dp = args.integer("dp");
  if (ep < 1 || dp < 0 || args.number("expert-capacity") < 0)
    throw UsageError{"moetune train: --ep must be >= 1, --dp and --expert-capacity >= 0"};
  if (args.text("ep-exchange") != "nccl" && args.text("ep-exchange") != "nvlink")
    throw UsageError{"moetune train: --ep-exchange must be nccl or nvlink"};
  if (args.text("ep-overlap") != "on" && args.text("ep-overlap") != "off")
    throw UsageError{"moetune train: --ep-overlap must be on or off"};
  if (!is_grouped_gemm_backend(args.text("grouped-gemm")))
    throw UsageError{"moetune train: --grouped-gemm must be sm90, moetune or cublas"};
  if (device == "cpu" && (world > 1 || ep > 1 || dp > 1))
    throw UsageError{str("moetune train: ",
                         world > 1 ? str(world, " processes (started by ", group.source, ")") : std::string("--ep/--dp"),
                         " need --device cuda: the CPU engine trains in one process")};
  if (world == 1 && (ep > 1 || dp > 1))
    throw UsageError{str("moetune train: --ep ", ep, " --dp ", dp, " needs one process per GPU: start the run with "
                         "`moetune launch --nproc N -- train ...` (or torchrun, srun, mpirun)")};
  const long zero = args.integer("zero");
  if (zero != 0 && zero != 1) throw UsageError{"moetune train: --zero must be 0 or 1"};
  if (zero == 1 && device == "cpu")
    throw UsageError{"moetune train: --zero 1 shards the GPU trainer's optimizer state over several GPUs; the CPU "
                     "engine has one process and nothing to shard: use --device cuda"};

  // The step checks, once --steps is known (from --epochs it is known only once the data is read).
  auto check_steps = [&](long schedule_steps) {
    if (schedule != Schedule::Constant && steps > schedule_steps)
      throw UsageError{str("moetune train: --steps ", steps, " goes past the end of the ", schedule_name(schedule),
                           " learning-rate schedule (--schedule-steps ", schedule_steps,
                           checkpoint ? ", from the checkpoint" : "", ")",
                           checkpoint ? "; to train further, start a new run with --model on a checkpoint" : "")};
    if (steps < start_step)
      throw UsageError{str("moetune train: --steps ", steps, " is before the checkpoint's step ", start_step)};
  };
  if (!steps_from_epochs) check_steps(args.integer("schedule-steps") > 0 ? args.integer("schedule-steps") : steps);
  const DType save_dtype = parse_save_dtype(args.text("save-dtype"), device);
  const ExpertLayout save_layout = parse_layout(args.text("save-layout"));
  const fs::path output = args.text("output");
  if (rank0) prepare_output(output);

  // The host fp32 copy of the whole model: the CPU engine trains it; the GPU one starts from this rank's slice of the
  // built-in model, and streams --model to the device itself. A resumed checkpoint is read below, in this rank's
  // layout.
  std::optional<Model> host;
  if (!checkpoint && !args.given("model")) host.emplace(Model::from_config(builtin_tiny_config(), seed));
  else if (!checkpoint && device == "cpu") host.emplace(Model::from_pretrained(args.text("model")));
  const ModelConfig config = checkpoint ? checkpoint->config : host ? host->config() : load_config(args.text("model"));
  if (rank0)
    std::fprintf(stderr, "model: %s (%s), %zu parameters, %d layers, %d experts top-%d\n",
                 checkpoint ? checkpoint->folder.c_str()
                 : args.given("model") ? args.text("model").c_str()
                                       : "built-in tiny MoE",
                 config.architecture.c_str(), ParamLayout(config).parameter_count(), config.num_layers,
                 config.num_experts, config.top_k);
  // Several GPUs: the layout, this rank's experts and the communicators (this selects the process's GPU).
  const RunPlace place(group, static_cast<int>(ep), static_cast<int>(dp), config);
  if (rank0 && world > 1)
    std::fprintf(stderr, "parallel: %d GPUs, EP %d x DP %d, %d sequences per GPU (%d per micro-batch)%s\n", world,
                 place.layout().ep, place.layout().dp, batch_size, batch_size * world,
                 zero == 1 ? ", optimizer state sharded (ZeRO-1)" : "");
  if (zero == 1 && world == 1)
    std::fprintf(stderr, "note: --zero 1 has no effect in a single process (nothing to shard the optimizer state "
                         "over); start several with `moetune launch --nproc N -- train ...`\n");

  // The GPU trainer's starting weights, in this rank's layout (place.local_config()), and a resumed optimizer state.
  // Resuming, each rank reads only what it holds of the checkpoint: its experts' weights and moments and the
  // replicated tensors, straight into its layout (read_checkpoint_values): host memory 12 bytes per parameter of this
  // rank, never the whole model's (one process, or --device cpu: the whole model, which it holds).
  std::vector<float> start_params;
  std::optional<TrainState> resumed_state;
  if (checkpoint) {
    LoadOptions load;  // several processes: progress lines in a terminal only, a summary below in any case
    load.progress = rank0 && (world == 1 || ::isatty(STDERR_FILENO) != 0);
    LoadReport report;
    CheckpointValues values = read_checkpoint_values(*checkpoint, place.local_config(), load, &report);
    checkpoint->files.reset();  // unmapped
    if (rank0 && world > 1)
      std::fprintf(stderr, "read %s: %.2f of its %.2f GB on rank 0 (%s) in %.1f s (%.2f GB/s)\n",
                   checkpoint->folder.c_str(), static_cast<double>(report.bytes_read) / 1e9,
                   static_cast<double>(report.bytes_total) / 1e9,
                   place.local_config().experts_sharded() ? "its experts and the replicated tensors" : "everything",
                   report.seconds, report.gb_per_s());
    if (device == "cpu") host.emplace(Model::from_values(config, std::move(values.params), checkpoint->folder));
    else start_params = std::move(values.params);
    resumed_state.emplace(std::move(values.state));
  } else if (device == "cuda" && host) {  // the built-in model: this rank's slice
    start_params = slice_to_shard(shard_runs(config, place.local_config()), host->params(),
                                  ParamLayout(place.local_config()).total_floats());
    host.reset();
  }

  // Every rank reads the same data; rank 0 first (it writes the demo corpus or builds the dataset cache), the others
  // once it has (they then read what it wrote).
  RankPlace rank_place{group.rank, world, rank0, rank0};
  std::optional<RunData> loaded;
  if (rank0) loaded.emplace(load_run_data(args, config, output, batch_size, seq_len, seed, rank_place));
  place.barrier();
  if (!rank0) loaded.emplace(load_run_data(args, config, output, batch_size, seq_len, seed, rank_place));
  RunData& data = *loaded;
  const std::string& train_path = data.train_path;
  BatchStream& sampler = *data.stream;
  if (steps_from_epochs) {
    const size_t rows_per_step =
        static_cast<size_t>(batch_size) * static_cast<size_t>(grad_accum) * static_cast<size_t>(world);
    steps = static_cast<long>((static_cast<size_t>(epochs) * data.rows_per_epoch + rows_per_step - 1) / rows_per_step);
    if (rank0)
      std::fprintf(stderr, "steps: %ld (%ld epochs of %zu rows, %zu rows per step)\n", steps, epochs,
                   data.rows_per_epoch, rows_per_step);
    check_steps(args.integer("schedule-steps") > 0 ? args.integer("schedule-steps") : steps);
  }
  const long schedule_steps = args.integer("schedule-steps") > 0 ? args.integer("schedule-steps") : steps;

  TrainOptions options;
  options.total_steps = schedule_steps;
  options.lr = args.number("lr");
  options.warmup_steps = args.integer("warmup");
  options.schedule = schedule;
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
  const float* start_values = start_params.empty() ? nullptr : start_params.data();
  std::unique_ptr<Runner> runner =
      make_runner(args, place, host ? &*host : nullptr, start_values, options, batch_size, seq_len);
  std::vector<float>().swap(start_params);  // uploaded: saves take the weights from the GPU (Runner::values_to_save)
  // Saves copy the tokenizer and generation files of --model along.
  const std::string tokenizer_source =
      args.given("model") && fs::is_directory(args.text("model")) ? args.text("model") : "";
  std::vector<double> step_axis, losses, eval_axis, eval_losses;
  int64_t tokens_seen = 0;
  int64_t real_tokens_seen = 0, slots_seen = 0;  // this session's, for the packing efficiency
  double elapsed_before = 0.0;  // training time of the run before this process (resumed)
  if (checkpoint) {
    const CheckpointRecord& record = checkpoint->record;
    const SamplerPosition& position = record.sampler;
    if (position.dataset_size != sampler.dataset_size())
      fail(train_path, ": ", sampler.dataset_size(), " training samples (sequences of ", seq_len,
           " tokens), but the checkpoint ", checkpoint->folder, " was trained on ", position.dataset_size,
           " (the data changed since)");
    if (record.batch_size != batch_size * world || record.seq_len != seq_len || record.grad_accum != grad_accum ||
        position.seed != seed || position.shuffle != (shuffle == "on") || record.options.total_steps != schedule_steps)
      fail(checkpoint->folder, "/", kTrainStateJson, ": batch, sampler or schedule fields disagree with \"run.options\"");
    const nlohmann::json& run = record.run;
    if (data.text && run.contains("data_cache_key") && run["data_cache_key"] != data.text->cache().key())
      fail(train_path, ": the tokenized data differs from the data the checkpoint ", checkpoint->folder,
           " was trained on (the data, tokenizer, chat template or template arguments changed since)");
    runner->load_state(std::move(*resumed_state));
    resumed_state.reset();
    sampler.seek(position.epoch, position.position);
    tokens_seen = record.tokens_seen;
    elapsed_before = record.elapsed_s;
    const std::string run_folder = run_folder_of(checkpoint->folder);
    std::vector<nlohmann::json> restored;
    if (rank0)
      restored = restore_metrics(fs::path(run_folder.empty() ? output : fs::path(run_folder)) / "metrics.jsonl",
                                 output / "metrics.jsonl", start_step);
    for (const nlohmann::json& record_line : restored) {
      step_axis.push_back(record_line["step"].get<double>());
      losses.push_back(record_line.value("loss", std::nan("")));
      if (record_line.contains("eval_loss") && record_line["eval_loss"].is_number()) {
        eval_axis.push_back(record_line["step"].get<double>());
        eval_losses.push_back(record_line["eval_loss"].get<double>());
      }
    }
    if (rank0)
      std::fprintf(stderr, "resumed at step %ld (epoch %ld, sample %zu of the data order); training to step %ld\n",
                   start_step, static_cast<long>(position.epoch), position.position, steps);
  }
  std::optional<MetricsLog> metrics;
  if (rank0) metrics.emplace((output / "metrics.jsonl").string(), checkpoint.has_value());

  const nlohmann::json run_options = recorded_options(args, steps, schedule_steps);
  CheckpointWriteOptions write_options;
  write_options.keep_last = static_cast<int>(keep_last);
  write_options.copy_files_from = tokenizer_source;
  write_options.after_file = test_pause_in_save();
  const auto start = std::chrono::steady_clock::now();
  auto seconds_since_start = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  long last_checkpoint = checkpoint ? start_step : -1;
  // Collective on several GPUs: every rank writes its part (io/checkpoint_writer.h); returns the folder.
  auto save_checkpoint = [&](long step) {
    const SaveValues values = runner->values_to_save(/*with_state=*/true);
    CheckpointRecord record;
    record.options = options;
    record.batch_size = batch_size * world;  // the global micro-batch: the run resumes on any number of GPUs
    record.seq_len = seq_len;
    record.grad_accum = grad_accum;
    record.sampler = {sampler.epoch(), sampler.position(), seed, shuffle == "on", sampler.dataset_size()};
    record.tokens_seen = tokens_seen;
    record.elapsed_s = elapsed_before + seconds_since_start();
    record.run = {{"options", run_options}};
    if (data.text) record.run["data_cache_key"] = data.text->cache().key();
    record.run["processes"] = world;
    last_checkpoint = step;
    return write_checkpoint((output / "checkpoints").string(), config, values.held, step, record, write_options,
                            place.save_ranks());
  };

  const int eval_batches = static_cast<int>(args.integer("eval-batches"));
  std::optional<ProgressLine> progress;
  if (rank0) progress.emplace(static_cast<int>(steps));
  const StopSignals signals;
  for (long s = start_step; s < steps; ++s) {
    std::vector<Batch> micro;
    int64_t step_real = 0, step_slots = 0;
    bool real_known = true;
    for (int m = 0; m < grad_accum; ++m) {
      micro.push_back(sampler.next());
      // Several GPUs: the tokens of the whole global batch.
      const int64_t real = data.rank_rows ? data.rank_rows->global_real_tokens() : micro.back().real_tokens;
      real_known = real_known && real >= 0;
      step_real += real;
      step_slots += static_cast<int64_t>(micro.back().batch_size) * micro.back().seq_len * world;
    }
    const StepStats stats = runner->step(micro);
    tokens_seen += stats.tokens;
    const double session_s = seconds_since_start();
    const double elapsed = elapsed_before + session_s;
    const double tokens_per_s = tokens_seen / std::max(elapsed, 1e-9);
    nlohmann::json record = {{"step", stats.step}, {"loss", stats.loss},       {"ce_loss", stats.ce_loss},
                             {"aux_loss", stats.aux_loss}, {"grad_norm", stats.grad_norm}, {"lr", stats.lr},
                             {"tokens", tokens_seen}, {"tokens_per_s", tokens_per_s}, {"elapsed_s", elapsed},
                             {"epoch", sampler.epoch()}};
    if (real_known) {
      real_tokens_seen += step_real;
      slots_seen += step_slots;
      record["real_tokens"] = step_real;
      record["packing_efficiency"] = static_cast<double>(step_real) / static_cast<double>(step_slots);
    }
    if (data.eval && (stats.step % eval_every == 0 || stats.step == steps)) {
      const double eval_loss = mean_eval_loss(*runner, *data.eval, batch_size * world, eval_batches);
      record["eval_loss"] = eval_loss;
      eval_axis.push_back(static_cast<double>(stats.step));
      eval_losses.push_back(eval_loss);
    }
    if (metrics) metrics->write(record);
    step_axis.push_back(static_cast<double>(stats.step));
    losses.push_back(stats.loss);
    if (progress)
      progress->update(static_cast<int>(stats.step), stats.loss, tokens_per_s,
                       session_s / static_cast<double>(stats.step - start_step) * static_cast<double>(steps - stats.step));
    if (save_every > 0 && (stats.step % save_every == 0 || stats.step == steps)) {
      const std::string folder = save_checkpoint(stats.step);
      if (progress) {
        progress->finish();
        std::fprintf(stderr, "checkpoint: %s\n", folder.c_str());
      }
    }
    // Every rank stops after the same step, whichever of them caught the signal.
    const int caught = place.agreed_signal(signals.caught());
    if (caught != 0) {
      if (progress) progress->finish();
      const char* name = caught == SIGINT ? "SIGINT" : "SIGTERM";
      if (rank0)
        write_loss_curve_svg((output / "loss.svg").string(), step_axis, losses, "moetune train: loss", eval_axis,
                             eval_losses);
      const std::string folder =
          last_checkpoint == stats.step ? (output / "checkpoints" / checkpoint_folder_name(stats.step)).string()
                                        : save_checkpoint(stats.step);
      if (rank0)
        std::fprintf(stderr, "moetune train: stopped by %s after step %ld of %ld; checkpoint %s; continue with: "
                     "moetune train --resume %s\n", name, stats.step, steps, folder.c_str(),
                     (output / "checkpoints").c_str());
      return 128 + caught;
    }
  }
  if (progress) progress->finish();
  const double elapsed = elapsed_before + seconds_since_start();

  // The final model: every rank writes its part (collective on several GPUs).
  SaveOptions save;
  save.dtype = save_dtype;
  save.expert_layout = save_layout;
  save.copy_files_from = tokenizer_source;
  const SaveValues final_values = runner->values_to_save(/*with_state=*/false);
  save_hf_checkpoint((output / "final").string(), config, final_values.held, save, place.save_ranks());
  if (!rank0) return 0;
  write_loss_curve_svg((output / "loss.svg").string(), step_axis, losses, "moetune train: loss", eval_axis, eval_losses);

  const double packing_efficiency =
      slots_seen > 0 ? static_cast<double>(real_tokens_seen) / static_cast<double>(slots_seen) : std::nan("");
  const double first_loss = losses.empty() ? std::nan("") : losses.front();
  const double final_loss = losses.empty() ? std::nan("") : losses.back();
  nlohmann::json summary = {
      {"model", args.given("model") ? args.text("model") : "built-in tiny MoE"}, {"data", train_path},
      {"steps", steps}, {"batch_size", batch_size}, {"processes", world}, {"seq_len", seq_len},
      {"grad_accum", grad_accum},
      {"first_loss", first_loss}, {"final_loss", final_loss}, {"elapsed_s", elapsed},
      {"tokens_per_s", tokens_seen / std::max(elapsed, 1e-9)}, {"checkpoint", (output / "final").string()}};
  if (checkpoint) summary["resumed_from"] = absolute_path(checkpoint->folder);
  if (slots_seen > 0) summary["packing_efficiency"] = packing_efficiency;
  if (data.text) summary["data_cache"] = data.text->cache().path();
  std::ofstream((output / "run.json")) << summary.dump(2) << "\n";
  std::fprintf(stderr, "loss %.4f -> %.4f in %s (%.0f tokens/s)%s\n", first_loss, final_loss,
               format_duration(elapsed).c_str(), tokens_seen / std::max(elapsed, 1e-9),
               eval_losses.empty() ? "" : str(", eval loss ", eval_losses.back()).c_str());
  if (slots_seen > 0)
    std::fprintf(stderr, "packing efficiency %.1f%% (%lld real tokens in %lld slots)\n", 100.0 * packing_efficiency,
                 static_cast<long long>(real_tokens_seen), static_cast<long long>(slots_seen));
  std::fprintf(stderr, "saved %s, %s, %s\n", (output / "final").c_str(), (output / "metrics.jsonl").c_str(),
               (output / "loss.svg").c_str());
  return 0;
}

}  // namespace moetune::cli
