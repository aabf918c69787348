// Why: a resumed run must be indistinguishable from one that never stopped (CPU: bit-identical losses and parameters),
// and a checkpoint must survive the ways a run really ends: SIGTERM from a scheduler, SIGKILL in the middle of a save.
// In-process tests pin the library (Trainer state, train_state.h); CLI tests run the built binary the way a user would.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "api/model.h"
#include "io/safetensors.h"
#include "test_util.h"
#include "train/data.h"
#include "train/train_state.h"
#include "train/trainer.h"

namespace moetune {
namespace {

namespace fs = std::filesystem;
using test_util::CommandResult;
using test_util::error_of;
using test_util::lines_of;
using test_util::TempFolder;

// --- in-process -------------------------------------------------------------------------------------------------------

constexpr int kBatch = 2, kSeqLen = 16, kGradAccum = 2, kSamples = 10, kSteps = 6;
constexpr uint64_t kInitSeed = 3, kDataSeed = 11;

// 10 samples: a step takes 4, so the data order crosses into epoch 1 during step 3 (the resume point).
TokenDataset make_dataset(const ModelConfig& config) {
  const std::vector<int32_t> tokens = generate_demo_tokens(config.vocab_size, kSamples * kSeqLen, 1234);
  std::vector<Sample> samples;
  for (int i = 0; i < kSamples; ++i)
    samples.push_back({std::vector<int32_t>(tokens.begin() + i * kSeqLen, tokens.begin() + (i + 1) * kSeqLen), {}});
  return TokenDataset::from_samples(std::move(samples), DataOptions{config.vocab_size, kSeqLen});
}

TrainOptions make_options() {
  TrainOptions options;
  options.total_steps = kSteps;  // warm-up then cosine over 6 steps: the step count matters for every update
  options.lr = 3e-3;
  options.warmup_steps = 2;
  options.schedule = Schedule::Cosine;
  options.weight_decay = 0.01;
  return options;
}

std::vector<double> train_steps(Trainer& trainer, BatchSampler& sampler, int steps) {
  std::vector<double> losses;
  for (int s = 0; s < steps; ++s) {
    std::vector<Batch> micro;
    for (int m = 0; m < kGradAccum; ++m) micro.push_back(sampler.next());
    losses.push_back(trainer.step(micro).loss);
  }
  return losses;
}

// Writes a checkpoint of a run after `steps` steps into `checkpoints`.
std::string run_and_checkpoint(const std::string& checkpoints, int steps, std::vector<double>* losses = nullptr) {
  Model model = Model::from_config(builtin_tiny_config(), kInitSeed);
  const TokenDataset data = make_dataset(model.config());
  Trainer trainer(model, make_options(), kBatch, kSeqLen);
  BatchSampler sampler(data, kBatch, kDataSeed, true);
  const std::vector<double> run = train_steps(trainer, sampler, steps);
  if (losses) *losses = run;
  CheckpointRecord record;
  record.options = make_options();
  record.batch_size = kBatch;
  record.seq_len = kSeqLen;
  record.grad_accum = kGradAccum;
  record.sampler = {sampler.epoch(), sampler.position(), kDataSeed, true, data.size()};
  record.tokens_seen = 42;
  record.run = {{"note", "test"}};
  return write_checkpoint(checkpoints, model, trainer.state(), record);
}

TEST(ResumeInProcess, ThreePlusThreeStepsEqualSixBitForBit) {
  // Uninterrupted.
  Model straight = Model::from_config(builtin_tiny_config(), kInitSeed);
  const TokenDataset straight_data = make_dataset(straight.config());
  Trainer straight_trainer(straight, make_options(), kBatch, kSeqLen);
  BatchSampler straight_sampler(straight_data, kBatch, kDataSeed, true);
  const std::vector<double> straight_losses = train_steps(straight_trainer, straight_sampler, kSteps);

  // Three steps, a checkpoint, and everything thrown away.
  TempFolder temp;
  std::vector<double> first_losses;
  const std::string folder = run_and_checkpoint(temp.file("checkpoints"), 3, &first_losses);
  EXPECT_EQ(fs::path(folder).filename(), "step-3");

  // A new "process": everything rebuilt from the checkpoint.
  LoadedCheckpoint loaded = load_checkpoint(temp.file("checkpoints"));
  EXPECT_EQ(loaded.folder, folder);
  EXPECT_EQ(loaded.record.step, 3);
  EXPECT_EQ(loaded.record.sampler.epoch, 1);  // 12 rows of a 10-sample epoch taken
  EXPECT_EQ(loaded.record.sampler.position, 2u);
  EXPECT_EQ(loaded.record.tokens_seen, 42);
  EXPECT_EQ(loaded.record.run.at("note"), "test");
  EXPECT_EQ(loaded.record.options.total_steps, kSteps);
  EXPECT_EQ(loaded.record.options.weight_decay, 0.01);
  const TokenDataset data = make_dataset(loaded.model.config());
  Trainer trainer(loaded.model, loaded.record.options, loaded.record.batch_size, loaded.record.seq_len);
  trainer.load_state(std::move(loaded.state));
  EXPECT_EQ(trainer.steps_done(), 3);
  BatchSampler sampler(data, loaded.record.batch_size, loaded.record.sampler.seed, loaded.record.sampler.shuffle);
  sampler.seek(loaded.record.sampler.epoch, loaded.record.sampler.position);
  const std::vector<double> resumed_losses = train_steps(trainer, sampler, kSteps - 3);

  ASSERT_EQ(straight_losses.size(), 6u);
  for (int s = 0; s < 3; ++s) EXPECT_EQ(first_losses[s], straight_losses[s]) << "step " << s + 1;
  for (int s = 3; s < 6; ++s) EXPECT_EQ(resumed_losses[s - 3], straight_losses[s]) << "step " << s + 1;  // exact
  ASSERT_EQ(loaded.model.buffer_size(), straight.buffer_size());
  EXPECT_EQ(std::memcmp(loaded.model.params(), straight.params(), straight.buffer_size() * sizeof(float)), 0);
  EXPECT_EQ(trainer.state().exp_avg, straight_trainer.state().exp_avg);
  EXPECT_EQ(trainer.state().exp_avg_sq, straight_trainer.state().exp_avg_sq);
  EXPECT_EQ(trainer.steps_done(), straight_trainer.steps_done());
  // The loss really depends on the schedule: not a run stuck at lr 0.
  EXPECT_NE(straight_losses.front(), straight_losses.back());
}

TEST(ResumeInProcess, StateFilesHoldEveryParameterInFp32) {
  TempFolder temp;
  const std::string folder = run_and_checkpoint(temp.file("checkpoints"), 1);
  const Model model = Model::from_config(builtin_tiny_config(), kInitSeed);
  const SafetensorsFile file = SafetensorsFile::open(folder + "/" + kTrainStateTensors);
  EXPECT_EQ(file.tensors().size(), 2 * model.layout().params().size());
  EXPECT_EQ(file.metadata().at("step"), "1");
  for (const ParamInfo& info : model.layout().params())
    for (const std::string prefix : {"exp_avg.", "exp_avg_sq."}) {
      const TensorEntry* entry = file.find(prefix + info.name);
      ASSERT_NE(entry, nullptr) << prefix << info.name;
      EXPECT_EQ(entry->dtype, DType::F32);
      EXPECT_EQ(entry->shape, info.shape);
    }
  // The step folder is a plain Hugging Face model folder too.
  EXPECT_NO_THROW(Model::from_pretrained(folder));
  const nlohmann::json state = test_util::read_json(folder + "/" + kTrainStateJson);
  EXPECT_EQ(state.at("step"), 1);
  EXPECT_EQ(state.at("schedule").at("name"), "cosine");
  EXPECT_EQ(state.at("sampler").at("seed"), kDataSeed);
}

TEST(ResumeInProcess, KeepLastPrunesOnlyAfterTheNewCheckpoint) {
  TempFolder temp;
  Model model = Model::from_config(builtin_tiny_config(), 1);
  const std::string checkpoints = temp.file("checkpoints");
  TrainState state{0, std::vector<float>(model.buffer_size(), 0.5f), std::vector<float>(model.buffer_size(), 0.25f)};
  CheckpointRecord record;
  record.batch_size = 1;
  record.seq_len = 8;
  record.sampler.dataset_size = 4;
  CheckpointWriteOptions options;
  options.keep_last = 2;
  std::vector<std::string> seen_files;
  options.after_file = [&](const std::string& file) { seen_files.push_back(file); };
  auto folders = [&] {
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(checkpoints)) names.push_back(entry.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  };
  for (long step = 1; step <= 4; ++step) {
    state.step = step;
    write_checkpoint(checkpoints, model, state, record, options);
  }
  EXPECT_EQ(folders(), (std::vector<std::string>{"step-3", "step-4"}));
  // Each save's files, once each, in the order they are completed: the tensor files, then the small files.
  const std::vector<std::string> per_save = {"model.safetensors", kTrainStateTensors, "config.json", kTrainStateJson};
  ASSERT_EQ(seen_files.size(), 4 * per_save.size());
  EXPECT_EQ(std::vector<std::string>(seen_files.begin(), seen_files.begin() + 4), per_save);

  // A left-over staging folder of a killed save is not a checkpoint, and the next save removes it.
  fs::create_directories(checkpoints + "/step-9.tmp-999999");
  EXPECT_EQ(resolve_checkpoint(checkpoints), checkpoints + "/step-4");
  EXPECT_EQ(resolve_checkpoint(temp.path()), checkpoints + "/step-4");  // the run folder
  EXPECT_EQ(resolve_checkpoint(checkpoints + "/step-3"), checkpoints + "/step-3");

  // Resuming step 3 and saving step 4 again: the old step-4 is replaced, nothing newer survives.
  options.keep_last = 0;
  fs::create_directories(checkpoints + "/step-7/x");  // a later step of an abandoned timeline
  state.step = 4;
  state.exp_avg[0] = 9.0f;
  write_checkpoint(checkpoints, model, state, record, options);
  EXPECT_EQ(folders(), (std::vector<std::string>{"step-3", "step-4"}));
  EXPECT_EQ(load_checkpoint(checkpoints).state.exp_avg[0], 9.0f);
}

// --- bad state files --------------------------------------------------------------------------------------------------


class ResumeBadState : public ::testing::Test {
 protected:
  void SetUp() override { folder_ = run_and_checkpoint(temp_.file("checkpoints"), 1); }
  std::string file(const char* name) const { return folder_ + "/" + name; }
  TempFolder temp_;
  std::string folder_;
};

TEST_F(ResumeBadState, MissingStateTensors) {
  fs::remove(file(kTrainStateTensors));
  EXPECT_MESSAGE_HAS(error_of([&] { load_checkpoint(folder_); }), file(kTrainStateTensors), "missing");
}

TEST_F(ResumeBadState, TruncatedStateTensors) {
  const std::string bytes = test_util::read_text(file(kTrainStateTensors));
  test_util::write_text(file(kTrainStateTensors), bytes.substr(0, bytes.size() / 2));
  EXPECT_MESSAGE_HAS(error_of([&] { load_checkpoint(folder_); }), file(kTrainStateTensors));
}

TEST_F(ResumeBadState, TensorWithTheWrongShape) {
  const std::string name = "exp_avg_sq.model.layers.1.self_attn.k_proj.weight";  // (48, 96) stored as (96, 48)
  bool found = false;
  test_util::rewrite_safetensors(file(kTrainStateTensors), [&](TensorToWrite& tensor) {
    if (tensor.name == name) tensor.shape = {tensor.shape[1], tensor.shape[0]};
    found |= tensor.name == name;
    return true;
  });
  ASSERT_TRUE(found);
  EXPECT_MESSAGE_HAS(error_of([&] { load_checkpoint(folder_); }), file(kTrainStateTensors), name, "shape");
}

TEST_F(ResumeBadState, MissingTensor) {
  const std::string name = "exp_avg.model.norm.weight";
  test_util::rewrite_safetensors(file(kTrainStateTensors), [&](TensorToWrite& tensor) { return tensor.name != name; });
  EXPECT_MESSAGE_HAS(error_of([&] { load_checkpoint(folder_); }), file(kTrainStateTensors), name, "missing");
}

TEST_F(ResumeBadState, UnexpectedTensor) {
  const float values[4] = {1, 2, 3, 4};
  test_util::rewrite_safetensors(file(kTrainStateTensors), [](TensorToWrite&) { return true; },
                {{"exp_avg.model.extra.weight", DType::F32, {4}, values, sizeof values}});
  EXPECT_MESSAGE_HAS(error_of([&] { load_checkpoint(folder_); }), file(kTrainStateTensors), "exp_avg.model.extra.weight",
                     "unexpected");
}

TEST_F(ResumeBadState, StateOfAnotherModel) {
  // The moments of a smaller model (two layers) next to the weights of the four-layer one.
  nlohmann::json small = builtin_tiny_config().source;
  small["num_hidden_layers"] = 2;
  Model other = Model::from_config(parse_config(small, "test"), 1);
  TrainState state{1, std::vector<float>(other.buffer_size()), std::vector<float>(other.buffer_size())};
  CheckpointRecord record;
  record.sampler.dataset_size = 10;
  const std::string other_folder = write_checkpoint(temp_.file("other"), other, state, record);
  fs::copy_file(other_folder + "/" + kTrainStateTensors, file(kTrainStateTensors), fs::copy_options::overwrite_existing);
  EXPECT_MESSAGE_HAS(error_of([&] { load_checkpoint(folder_); }), file(kTrainStateTensors), "model.layers.2",
                     "missing");
}

TEST_F(ResumeBadState, StepOfTheTensorsDiffersFromTheJson) {
  nlohmann::json state = test_util::read_json(file(kTrainStateJson));
  state["step"] = 2;
  test_util::write_json(file(kTrainStateJson), state);
  EXPECT_MESSAGE_HAS(error_of([&] { load_checkpoint(folder_); }), file(kTrainStateTensors), "step");
}

TEST_F(ResumeBadState, BrokenJson) {
  test_util::write_text(file(kTrainStateJson), "{\"format\": \"moetune-train-state\", ");
  EXPECT_MESSAGE_HAS(error_of([&] { load_checkpoint(folder_); }), file(kTrainStateJson), "JSON");
  nlohmann::json state = test_util::read_json(run_and_checkpoint(temp_.file("fresh"), 1) + "/" + kTrainStateJson);
  state["sampler"].erase("position");
  test_util::write_json(file(kTrainStateJson), state);
  EXPECT_MESSAGE_HAS(error_of([&] { load_checkpoint(folder_); }), file(kTrainStateJson), "sampler.position");
  state["sampler"]["position"] = "two";
  test_util::write_json(file(kTrainStateJson), state);
  EXPECT_MESSAGE_HAS(error_of([&] { load_checkpoint(folder_); }), file(kTrainStateJson), "sampler.position");
  fs::remove(file(kTrainStateJson));
  EXPECT_MESSAGE_HAS(error_of([&] { load_checkpoint(folder_); }), file(kTrainStateJson), "missing");
}

TEST_F(ResumeBadState, StepFolderWithoutConfig) {
  fs::remove(file("config.json"));
  EXPECT_MESSAGE_HAS(error_of([&] { load_checkpoint(folder_); }), file("config.json"));
  EXPECT_MESSAGE_HAS(error_of([&] { load_checkpoint(temp_.file("nowhere")); }), temp_.file("nowhere"));
}

// --- CLI ---------------------------------------------------------------------------------------------------------------

using test_util::describe;
using test_util::quote;

// Runs `moetune <arguments>` with the temporary folder as working directory.
CommandResult moetune(const TempFolder& temp, const std::string& arguments) {
  return test_util::run_moetune(temp.path(), arguments);
}

// step -> record of a run's metrics.jsonl; a step logged twice is a failure.
std::map<long, nlohmann::json> metrics_of(const std::string& path) {
  std::map<long, nlohmann::json> records;
  for (const std::string& line : lines_of(test_util::read_text(path))) {
    const nlohmann::json record = nlohmann::json::parse(line);
    const long step = record.at("step").get<long>();
    EXPECT_EQ(records.count(step), 0u) << path << ": step " << step << " logged twice";
    records[step] = record;
  }
  return records;
}

// The losses of steps first..last of a run (a failure when one is missing).
std::vector<double> losses_of(const std::string& path, long first, long last) {
  const std::map<long, nlohmann::json> records = metrics_of(path);
  std::vector<double> losses;
  for (long step = first; step <= last; ++step) {
    const auto it = records.find(step);
    EXPECT_NE(it, records.end()) << path << ": no step " << step;
    losses.push_back(it == records.end() ? -1.0 : it->second.at("loss").get<double>());
  }
  return losses;
}

// Tiny and fast: the built-in model on the generated corpus, 2 x 16 tokens per micro-batch.
constexpr const char* kTiny = "train --seq-len 16 --batch-size 2 --warmup 1 --eval-every 2";

TEST(ResumeCli, HelpNamesTheCheckpointOptions) {
  TempFolder temp;
  const CommandResult help = moetune(temp, "train --help");
  ASSERT_EQ(help.status, 0) << describe(help);
  for (const char* option : {"--save-every N", "--keep-last K", "--resume DIR", "--schedule-steps N"})
    EXPECT_NE(help.out.find(option), std::string::npos) << option << "\n" << help.out;
}

TEST(ResumeCli, InterruptedAndResumedEqualsStraight) {
  TempFolder temp;
  const std::string flags = std::string(kTiny) + " --grad-accum 2 --save-every 3";
  const CommandResult straight = moetune(temp, flags + " --steps 6 --output straight");
  ASSERT_EQ(straight.status, 0) << describe(straight);
  // A cosine schedule over 6 steps, stopped after 3 (as a pre-empted run would be), then resumed to the end.
  const CommandResult first = moetune(temp, flags + " --steps 3 --schedule-steps 6 --output run");
  ASSERT_EQ(first.status, 0) << describe(first);
  ASSERT_TRUE(fs::exists(temp.file("run/checkpoints/step-3/trainer_state.json")));
  const CommandResult resumed = moetune(temp, "train --resume run/checkpoints --steps 6");
  ASSERT_EQ(resumed.status, 0) << describe(resumed);

  EXPECT_EQ(losses_of(temp.file("run/metrics.jsonl"), 1, 6), losses_of(temp.file("straight/metrics.jsonl"), 1, 6));
  EXPECT_EQ(metrics_of(temp.file("run/metrics.jsonl")).size(), 6u);
  EXPECT_EQ(metrics_of(temp.file("run/metrics.jsonl")).at(6).at("eval_loss"),
            metrics_of(temp.file("straight/metrics.jsonl")).at(6).at("eval_loss"));
  EXPECT_EQ(test_util::read_text(temp.file("run/final/model.safetensors")),
            test_util::read_text(temp.file("straight/final/model.safetensors")));
  // Both checkpoints are there (keep-last 3), and identical to the straight run's.
  EXPECT_TRUE(fs::exists(temp.file("run/checkpoints/step-6/trainer_state.safetensors")));
  EXPECT_EQ(test_util::read_text(temp.file("run/checkpoints/step-6/trainer_state.safetensors")),
            test_util::read_text(temp.file("straight/checkpoints/step-6/trainer_state.safetensors")));
  EXPECT_EQ(test_util::read_json(temp.file("run/run.json")).at("resumed_from"),
            fs::absolute(temp.file("run/checkpoints/step-3")).lexically_normal().string());
}

// A checkpoint is device-neutral: one written by `--device cuda` (here: a CPU checkpoint whose record says so, as a GPU
// run's would) resumes with --device cpu, and the engine options are no conflict; the losses are the CPU run's.
TEST(ResumeCli, CheckpointOfTheOtherDeviceResumes) {
  TempFolder temp;
  const std::string flags = std::string(kTiny) + " --save-every 3";
  const CommandResult straight = moetune(temp, flags + " --steps 5 --output straight");
  ASSERT_EQ(straight.status, 0) << describe(straight);
  const CommandResult first = moetune(temp, flags + " --steps 3 --schedule-steps 5 --output run");
  ASSERT_EQ(first.status, 0) << describe(first);
  const std::string state_json = temp.file("run/checkpoints/step-3/") + kTrainStateJson;
  nlohmann::json state = test_util::read_json(state_json);
  nlohmann::json& options = state.at("run").at("options");
  ASSERT_EQ(options.at("device"), "cpu");
  options["device"] = "cuda";
  options["recipe"] = "mixed";
  options["fused-optimizer"] = "on";
  options["grouped-gemm"] = "cublas";
  test_util::write_json(state_json, state);
  const CommandResult resumed =
      moetune(temp, "train --resume run/checkpoints --steps 5 --device cpu --recipe bf16 --fused-optimizer off");
  ASSERT_EQ(resumed.status, 0) << describe(resumed);
  EXPECT_EQ(losses_of(temp.file("run/metrics.jsonl"), 1, 5), losses_of(temp.file("straight/metrics.jsonl"), 1, 5));
  // The resumed run's own checkpoint records the device it ran on.
  EXPECT_EQ(test_util::read_json(temp.file("run/checkpoints/step-5/") + kTrainStateJson).at("run").at("options").at("device"),
            "cpu");
}

TEST(ResumeCli, ConflictingOptionsAreErrors) {
  TempFolder temp;
  ASSERT_EQ(moetune(temp, std::string(kTiny) + " --steps 2 --save-every 2 --output run").status, 0);
  for (const auto& [flags, named] : std::vector<std::pair<std::string, std::string>>{
           {"--lr 1e-2", "--lr"}, {"--batch-size 4", "--batch-size"}, {"--seq-len 32", "--seq-len"},
           {"--schedule linear", "--schedule"}, {"--data other.bin", "--data"}, {"--seed 7", "--seed"},
           {"--shuffle off", "--shuffle"}, {"--grad-accum 2", "--grad-accum"}, {"--steps 9", "--steps 9"}}) {
    const CommandResult result = moetune(temp, "train --resume run/checkpoints " + flags);
    EXPECT_EQ(result.status, 2) << flags << "\n" << describe(result);
    EXPECT_EQ(lines_of(result.err).size(), 1u) << describe(result);
    EXPECT_NE(result.err.find(named), std::string::npos) << describe(result);
  }
  // The same values spelled differently are no conflict.
  const CommandResult same = moetune(temp, "train --resume run/checkpoints/step-2 --lr 0.003 --seq-len 16 --steps 2");
  EXPECT_EQ(same.status, 0) << describe(same);
  // Bad checkpoint folders: one line naming the file.
  fs::remove(temp.file("run/checkpoints/step-2/trainer_state.safetensors"));
  const CommandResult broken = moetune(temp, "train --resume run/checkpoints");
  EXPECT_EQ(broken.status, 1) << describe(broken);
  EXPECT_NE(broken.err.find("step-2/trainer_state.safetensors"), std::string::npos) << describe(broken);
  EXPECT_EQ(lines_of(broken.err).size(), 1u) << describe(broken);
  fs::remove(temp.file("run/checkpoints/step-2/config.json"));
  const CommandResult no_config = moetune(temp, "train --resume run/checkpoints/step-2");
  EXPECT_EQ(no_config.status, 1) << describe(no_config);
  EXPECT_NE(no_config.err.find("step-2/config.json"), std::string::npos) << describe(no_config);
}

// A moetune process in the background (pid known, so tests can signal it).
struct Background {
  pid_t pid = -1;
  std::string log;
};

Background start(const TempFolder& temp, const std::vector<std::string>& arguments, const std::string& pause_ms = "") {
  Background child;
  child.log = temp.file("background.log");
  std::vector<std::string> words = {test_util::cli_path()};
  words.insert(words.end(), arguments.begin(), arguments.end());
  child.pid = ::fork();
  if (child.pid == 0) {
    if (::chdir(temp.path().c_str()) != 0) ::_exit(126);
    const int fd = ::open(child.log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, STDOUT_FILENO);
    ::dup2(fd, STDERR_FILENO);
    if (!pause_ms.empty()) ::setenv("MOETUNE_TEST_PAUSE_IN_SAVE", pause_ms.c_str(), 1);
    std::vector<char*> argv;
    for (std::string& word : words) argv.push_back(word.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  return child;
}

// Waits until `ready` holds (polling every 5 ms), at most 60 s.
bool wait_for(const std::function<bool()>& ready) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    if (ready()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

int wait_status(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

std::vector<std::string> entries(const std::string& folder) {
  std::vector<std::string> names;
  std::error_code error;
  for (fs::directory_iterator it(folder, error), end; !error && it != end; it.increment(error))
    names.push_back(it->path().filename().string());
  return names;
}

TEST(ResumeCli, KilledDuringASaveLeavesTheLastCheckpointIntact) {
  // Each save pauses 40 ms after each of its four files; the process is killed at a different point of a save in each
  // attempt (right after its staging folder appears, or later, into the next file or the rename).
  const std::vector<std::string> run_flags = {"train", "--seq-len", "16", "--batch-size", "2", "--warmup", "1",
                                              "--steps", "1000", "--save-every", "1", "--keep-last", "2"};
  for (const int delay_ms : {0, 30, 70, 110}) {
    SCOPED_TRACE("kill " + std::to_string(delay_ms) + " ms into a save");
    TempFolder temp;
    std::vector<std::string> flags = run_flags;
    flags.insert(flags.end(), {"--output", "run"});
    const Background child = start(temp, flags, "40");
    const std::string checkpoints = temp.file("run/checkpoints");
    const bool saving = wait_for([&] {
      bool complete = false, staging = false;
      for (const std::string& name : entries(checkpoints)) {
        complete |= name == "step-2";
        staging |= name.find(".tmp-") != std::string::npos;
      }
      return complete && staging;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    ::kill(child.pid, SIGKILL);
    const int status = wait_status(child.pid);
    ASSERT_TRUE(saving) << test_util::read_text(child.log);
    ASSERT_TRUE(WIFSIGNALED(status)) << test_util::read_text(child.log);
    // Killed right away, the save was certainly half-way: its staging folder is still there.
    if (delay_ms == 0) EXPECT_NE(test_util::staging_leftovers(checkpoints), std::vector<std::string>{});

    // Every folder named step-N is complete and loads; anything else is a staging or aside folder.
    long latest = 0;
    for (const std::string& name : entries(checkpoints)) {
      if (name.find(".tmp-") != std::string::npos || name.find(".old-") != std::string::npos) continue;
      ASSERT_EQ(name.rfind("step-", 0), 0u) << name;
      const LoadedCheckpoint loaded = load_checkpoint(checkpoints + "/" + name);
      EXPECT_EQ("step-" + std::to_string(loaded.record.step), name);
      latest = std::max(latest, loaded.record.step);
    }
    ASSERT_GE(latest, 2);
    EXPECT_EQ(resolve_checkpoint(checkpoints), checkpoints + "/step-" + std::to_string(latest));

    // Resume the latest to two steps further; the losses are those of a run that was never killed.
    const long end = latest + 2;
    const CommandResult resumed = moetune(temp, "train --resume run/checkpoints --steps " + std::to_string(end));
    ASSERT_EQ(resumed.status, 0) << describe(resumed);
    std::string straight_flags;
    for (const std::string& word : run_flags) straight_flags += word + " ";
    const CommandResult straight = moetune(temp, straight_flags + "--schedule-steps 1000 --steps " + std::to_string(end) +
                                                     " --save-every 0 --output straight");
    ASSERT_EQ(straight.status, 0) << describe(straight);
    EXPECT_EQ(losses_of(temp.file("run/metrics.jsonl"), 1, end), losses_of(temp.file("straight/metrics.jsonl"), 1, end));
    // The resumed run's saves removed the killed one's staging folder.
    EXPECT_EQ(test_util::staging_leftovers(checkpoints), std::vector<std::string>{});
  }
}

TEST(ResumeCli, SigtermWritesACheckpointAtTheCurrentStep) {
  TempFolder temp;
  const std::string flags = std::string(kTiny) + " --steps 100000";
  std::vector<std::string> words;
  for (size_t begin = 0, end; begin < flags.size(); begin = end + 1) {
    end = flags.find(' ', begin);
    if (end == std::string::npos) end = flags.size();
    words.push_back(flags.substr(begin, end - begin));
  }
  words.insert(words.end(), {"--output", "run"});
  const Background child = start(temp, words);
  const bool running = wait_for([&] { return lines_of(test_util::read_text(temp.file("run/metrics.jsonl"))).size() >= 3; });
  ::kill(child.pid, SIGTERM);
  const int status = wait_status(child.pid);
  const std::string log = test_util::read_text(child.log);
  ASSERT_TRUE(running) << log;
  ASSERT_TRUE(WIFEXITED(status)) << log;
  EXPECT_EQ(WEXITSTATUS(status), 128 + SIGTERM) << log;
  EXPECT_NE(lines_of(log).back().find("SIGTERM"), std::string::npos) << log;
  EXPECT_FALSE(fs::exists(temp.file("run/final"))) << "an interrupted run is not finished";

  // The checkpoint is at the last step logged (the one running when the signal came).
  const long stopped = metrics_of(temp.file("run/metrics.jsonl")).rbegin()->first;
  EXPECT_EQ(resolve_checkpoint(temp.file("run/checkpoints")),
            temp.file("run/checkpoints/step-" + std::to_string(stopped)));
  const long end = stopped + 2;
  const CommandResult resumed = moetune(temp, "train --resume run --steps " + std::to_string(end));
  ASSERT_EQ(resumed.status, 0) << describe(resumed);
  const CommandResult straight =
      moetune(temp, flags + " --schedule-steps 100000 --steps " + std::to_string(end) + " --output straight");
  ASSERT_EQ(straight.status, 0) << describe(straight);
  EXPECT_EQ(losses_of(temp.file("run/metrics.jsonl"), 1, end), losses_of(temp.file("straight/metrics.jsonl"), 1, end));
}

}  // namespace
}  // namespace moetune
