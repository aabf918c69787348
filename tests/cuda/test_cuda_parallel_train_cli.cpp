// Why: `moetune launch --nproc 2 -- train --device cuda --ep 2 --batch-size 1` must be the one-GPU run with
// --batch-size 2, seen from outside: the same losses and validation losses step by step, a final Hugging Face model with
// every expert (written by both ranks) holding the same weights, and checkpoints that hold every expert's weights and
// moments, so that an EP=2 checkpoint resumes on one GPU, a one-GPU checkpoint on two, and an EP=2 one with DP=2 (each
// rank reading only its part of it). The same for --dp 2. Every token goes to every expert (top_k = E) so that bf16
// rounding differences between a batch of 2 and two batches of 1 cannot flip a routing decision and hide a difference
// (see test_cuda_parallel_training.cpp). With --zero 1 (and
// --recipe mixed, whose fp32 master weights are sharded too) the same holds: saving gathers the sharded optimizer state
// and master weights, and the checkpoints resume with and without ZeRO. Saves are written by both ranks together; with
// the weights left unchanged (--lr 0) they are the one-GPU folders byte for byte.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>

#include "../test_util.h"
#include "api/model.h"
#include "cuda_test_util.h"
#include "multi_gpu.h"
#include "tiny_models.h"
#include "train/train_state.h"

namespace moetune::testing {
namespace {

using test_util::CommandResult;
using test_util::describe;
using test_util::TempFolder;

constexpr int kSteps = 6;
constexpr double kLossTolerance = 5e-3;    // relative, per step (bf16: a batch of 2 vs two batches of 1)
constexpr double kWeightTolerance = 1e-2;  // relative norm error per tensor after kSteps steps at lr 1e-3

// A model folder (bf16-exact weights, top_k = E), training and held-out token ids.
void write_inputs(const TempFolder& temp) {
  nlohmann::json j = tiny_json("qwen3_moe");
  j["num_experts_per_tok"] = j["num_experts"];
  const ModelConfig config = parse_config(j, "parallel train CLI test config");
  bf16_model(config, 51).save_pretrained(temp.file("model"));
  std::mt19937_64 generator(52);
  for (const auto& [name, count] : {std::pair{"train.bin", 4096}, std::pair{"eval.bin", 1024}}) {
    std::vector<int32_t> ids(static_cast<size_t>(count));
    for (int32_t& id : ids) id = static_cast<int32_t>(generator() % static_cast<uint64_t>(config.vocab_size));
    write_token_file(temp.file(name), ids);
  }
}

CommandResult moetune(const TempFolder& temp, const std::string& arguments) {
  return test_util::run_moetune(temp.path(), arguments);
}

struct StepRecord {
  double loss = 0.0, eval_loss = std::nan("");
};

std::vector<StepRecord> records_of(const std::string& metrics) {
  std::vector<StepRecord> records;
  for (const std::string& line : test_util::lines_of(test_util::read_text(metrics))) {
    const nlohmann::json record = nlohmann::json::parse(line);
    StepRecord r;
    r.loss = record.at("loss").get<double>();
    if (record.contains("eval_loss")) r.eval_loss = record.at("eval_loss").get<double>();
    records.push_back(r);
  }
  return records;
}

void expect_same_run(const std::string& what, const std::vector<StepRecord>& actual,
                     const std::vector<StepRecord>& expected) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  for (size_t s = 0; s < expected.size(); ++s) {
    EXPECT_NEAR(actual[s].loss, expected[s].loss, kLossTolerance * expected[s].loss) << what << ", step " << s + 1;
    EXPECT_EQ(std::isnan(actual[s].eval_loss), std::isnan(expected[s].eval_loss)) << what << ", step " << s + 1;
    if (!std::isnan(expected[s].eval_loss))
      EXPECT_NEAR(actual[s].eval_loss, expected[s].eval_loss, kLossTolerance * expected[s].eval_loss)
          << what << ", validation loss of step " << s + 1;
  }
}

// Every tensor of two saved models within kWeightTolerance; returns the worst relative norm error.
double expect_same_weights(const std::string& actual_folder, const std::string& expected_folder) {
  const Model actual = Model::from_pretrained(actual_folder), expected = Model::from_pretrained(expected_folder);
  EXPECT_EQ(actual.buffer_size(), expected.buffer_size());
  double worst = 0.0;
  for (const ParamInfo& p : expected.layout().params()) {
    const std::vector<float> a(actual.params() + p.offset, actual.params() + p.offset + p.numel);
    const std::vector<float> e(expected.params() + p.offset, expected.params() + p.offset + p.numel);
    const double error = relative_norm_error(a, e);
    worst = std::max(worst, error);
    EXPECT_LE(error, kWeightTolerance) << actual_folder << ": " << p.name;
  }
  return worst;
}

struct CliLayout {
  int ep = 1, dp = 1;
  bool zero = false;  // --zero 1 --recipe mixed
};

// The options of the launch (never taken from a checkpoint): the layout and ZeRO.
std::string layout_flags(const CliLayout& cli) {
  return " --ep " + std::to_string(cli.ep) + " --dp " + std::to_string(cli.dp) + (cli.zero ? " --zero 1" : "");
}

// `flags` on one GPU with --batch-size 2 into one/ (a test failure unless it succeeds), then on two with the layout and
// --batch-size 1 into two/; returns the two-GPU run.
CommandResult train_on_one_and_two(const TempFolder& temp, const CliLayout& cli, const std::string& flags) {
  const CommandResult one = moetune(temp, flags + " --batch-size 2 --output one");
  EXPECT_EQ(one.status, 0) << describe(one);
  return moetune(temp, "launch --nproc 2 -- " + flags + layout_flags(cli) + " --batch-size 1 --output two");
}

class CudaParallelTrainCli : public ::testing::TestWithParam<CliLayout> {};

TEST_P(CudaParallelTrainCli, TwoGpusTrainSaveAndResumeLikeOne) {
  SKIP_WITHOUT_GPUS(2);
  const auto [ep, dp, zero] = GetParam();
  TempFolder temp;
  write_inputs(temp);
  const std::string flags = "train --device cuda --model model --data train.bin --eval-data eval.bin --seq-len 32 "
                            "--steps " + std::to_string(kSteps) + " --warmup 1 --lr 1e-3 --aux-loss off "
                            "--save-every 3 --eval-every 3 --eval-batches 4" + (zero ? " --recipe mixed" : "");
  const std::string layout = layout_flags(GetParam());
  const CommandResult two = train_on_one_and_two(temp, GetParam(), flags);
  ASSERT_EQ(two.status, 0) << describe(two);
  // Rank 1 stays silent; rank 0 reports the layout.
  EXPECT_EQ(two.err.find("[rank 1]"), std::string::npos) << describe(two);
  EXPECT_EQ(two.out.find("[rank 1]"), std::string::npos) << describe(two);
  EXPECT_NE(two.err.find("EP " + std::to_string(ep) + " x DP " + std::to_string(dp)), std::string::npos)
      << describe(two);
  EXPECT_EQ(two.err.find("optimizer state sharded (ZeRO-1)") != std::string::npos, zero) << describe(two);

  const std::vector<StepRecord> expected = records_of(temp.file("one/metrics.jsonl"));
  ASSERT_EQ(expected.size(), static_cast<size_t>(kSteps));
  expect_same_run("two GPUs", records_of(temp.file("two/metrics.jsonl")), expected);
  EXPECT_EQ(test_util::read_json(temp.file("two/run.json")).at("processes"), 2);

  // The final model and the last checkpoint hold every expert.
  const double worst = expect_same_weights(temp.file("two/final"), temp.file("one/final"));
  expect_same_weights(temp.file("two/checkpoints/step-6"), temp.file("one/checkpoints/step-6"));
  std::printf("[train CLI EP %d x DP %d%s] worst weight relative norm error vs one GPU %.3g\n", ep, dp,
              zero ? " ZeRO-1" : "", worst);
  const Model model = Model::from_pretrained(temp.file("two/checkpoints/step-6"));
  EXPECT_NO_THROW(read_train_state(temp.file("two/checkpoints/step-6"), model.layout(), kSteps));
  EXPECT_EQ(read_checkpoint_record(temp.file("two/checkpoints/step-6")).batch_size, 2) << "the global batch";

  // The two-GPU checkpoint of step 3 continues on one GPU (--batch-size 2 derived from the global batch) ...
  const CommandResult on_one = moetune(temp, "train --resume two/checkpoints/step-3 --output on_one");
  ASSERT_EQ(on_one.status, 0) << describe(on_one);
  expect_same_run("two GPUs resumed on one", records_of(temp.file("on_one/metrics.jsonl")), expected);
  expect_same_weights(temp.file("on_one/final"), temp.file("one/final"));
  // ... and the one-GPU checkpoint on two (each rank cutting its experts out of the full state).
  const CommandResult on_two =
      moetune(temp, "launch --nproc 2 -- train --resume one/checkpoints/step-3 --output on_two" + layout);
  ASSERT_EQ(on_two.status, 0) << describe(on_two);
  expect_same_run("one GPU resumed on two", records_of(temp.file("on_two/metrics.jsonl")), expected);
  expect_same_weights(temp.file("on_two/final"), temp.file("one/final"));
  // Each rank read only its part of the checkpoint (train_state.h read_checkpoint_values): with EP its experts.
  EXPECT_NE(on_two.err.find(ep > 1 ? "its experts and the replicated tensors" : "everything"), std::string::npos)
      << describe(on_two);
  // ... and the two-GPU checkpoint on two GPUs of the other layout (EP 2 <-> DP 2): the EP size changes.
  const CliLayout other{ep > 1 ? 1 : 2, dp > 1 ? 1 : 2, zero};
  const CommandResult swapped = moetune(
      temp, "launch --nproc 2 -- train --resume two/checkpoints/step-3 --output swapped" + layout_flags(other));
  ASSERT_EQ(swapped.status, 0) << describe(swapped);
  EXPECT_NE(swapped.err.find("EP " + std::to_string(other.ep) + " x DP " + std::to_string(other.dp)), std::string::npos)
      << describe(swapped);
  expect_same_run("two GPUs resumed on two of the other layout", records_of(temp.file("swapped/metrics.jsonl")),
                  expected);
  expect_same_weights(temp.file("swapped/final"), temp.file("one/final"));

  // A global batch two processes cannot share is refused with the way out.
  const CommandResult odd = moetune(temp, "launch --nproc 2 -- train --resume one/checkpoints/step-3 --batch-size 2");
  EXPECT_NE(odd.status, 0);
  EXPECT_NE(odd.err.find("leave --batch-size out"), std::string::npos) << describe(odd);
}

// With --lr 0 the weights stay the model's own on every GPU, so the folders the two ranks write together (each its
// experts and a share of the replicated tensors, io/checkpoint_writer.h) must be the one-GPU folders byte for byte: the
// final model (bf16, fused layout) and the checkpoint's weights (f32, per expert) and config. The checkpoint's moments
// come from gradients, equal within bf16 rounding only: the same tensors, shapes and file layout.
TEST_P(CudaParallelTrainCli, TwoGpusWriteTheOneGpuFoldersByteForByte) {
  SKIP_WITHOUT_GPUS(2);
  TempFolder temp;
  write_inputs(temp);
  const CommandResult two = train_on_one_and_two(
      temp, GetParam(),
      std::string("train --device cuda --model model --data train.bin --seq-len 32 --steps 1 --warmup 0 --lr 0 ") +
          "--aux-loss off --save-every 1 --save-layout fused" + (GetParam().zero ? " --recipe mixed" : ""));
  ASSERT_EQ(two.status, 0) << describe(two);
  for (const std::string file : {"final/model.safetensors", "final/config.json", "checkpoints/step-1/model.safetensors",
                                 "checkpoints/step-1/config.json"})
    EXPECT_TRUE(test_util::read_text(temp.file("two/" + file)) == test_util::read_text(temp.file("one/" + file)))
        << file << " differs";
  const std::string state = std::string("checkpoints/step-1/") + kTrainStateTensors;
  const SafetensorsFile a = SafetensorsFile::open(temp.file("two/" + state)), b = SafetensorsFile::open(temp.file("one/" + state));
  EXPECT_EQ(a.mapping_size(), b.mapping_size());
  ASSERT_EQ(a.tensors().size(), b.tensors().size());
  for (size_t i = 0; i < a.tensors().size(); ++i) {
    EXPECT_EQ(a.tensors()[i].name, b.tensors()[i].name);
    EXPECT_EQ(a.tensors()[i].shape, b.tensors()[i].shape) << a.tensors()[i].name;
    EXPECT_EQ(a.tensors()[i].data - a.mapping(), b.tensors()[i].data - b.mapping()) << a.tensors()[i].name;
  }
  EXPECT_EQ(test_util::staging_leftovers(temp.file("two")), std::vector<std::string>{});
  EXPECT_EQ(test_util::staging_leftovers(temp.file("two/checkpoints")), std::vector<std::string>{});
}

INSTANTIATE_TEST_SUITE_P(Layouts, CudaParallelTrainCli,
                         ::testing::Values(CliLayout{2, 1, false}, CliLayout{1, 2, false}, CliLayout{1, 2, true},
                                           CliLayout{2, 1, true}),
                         [](const auto& info) {
                           return "ep" + std::to_string(info.param.ep) + "_dp" + std::to_string(info.param.dp) +
                                  (info.param.zero ? "_zero1" : "");
                         });

}  // namespace
}  // namespace moetune::testing
