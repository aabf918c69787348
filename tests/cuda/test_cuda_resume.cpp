// Why: a GPU run that stops and resumes from a checkpoint must continue exactly as if it never stopped (the kernels are
// deterministic, so: bit for bit), for both precision recipes, with and without the fused optimizer step; the
// checkpoint must move between the devices (within bf16 precision); an evaluation-only trainer must score as a training
// one; and `moetune train/eval --device cuda` must do all of that from the command line.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>

#include "../golden_fixture.h"
#include "../test_util.h"
#include "api/model.h"
#include "cuda_test_util.h"
#include "gpu/gpu_trainer.h"
#include "train/train_state.h"

namespace moetune::testing {
namespace {

namespace fs = std::filesystem;

constexpr int kBatch = 2, kSeq = 32, kSteps = 6, kStop = 3;
constexpr double kCrossDeviceLoss = 1e-2;  // bf16 engine vs fp32 reference, one step after the same state

ModelConfig tiny_config() {
  const nlohmann::json j = {{"model_type", "qwen3_moe"}, {"vocab_size", 256}, {"hidden_size", 128}, {"head_dim", 32},
                            {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
                            {"num_experts", 8}, {"num_experts_per_tok", 2}, {"moe_intermediate_size", 64},
                            {"intermediate_size", 96}, {"norm_topk_prob", true}, {"rms_norm_eps", 1e-6},
                            {"rope_theta", 10000.0}, {"output_router_logits", true}, {"router_aux_loss_coef", 0.02},
                            {"initializer_range", 0.1}, {"tie_word_embeddings", false}};
  return parse_config(j, "test config (resume)");
}

Batch batch_of_step(int step, int vocab) {
  std::mt19937_64 generator(1000 + step);
  Batch b{kBatch, kSeq, {}, {}};
  for (int i = 0; i < kBatch * kSeq; ++i) b.input_ids.push_back(static_cast<int32_t>(generator() % vocab));
  b.labels = b.input_ids;
  return b;
}

TrainOptions options_for(bool fused) {
  TrainOptions options;
  options.total_steps = kSteps;
  options.lr = 3e-3;
  options.warmup_steps = 2;
  options.weight_decay = 0.01;
  options.max_grad_norm = fused ? 0.0 : 1.0;
  return options;
}

// Writes a checkpoint of `trainer` (weights from download_params, state from export_state) the way the CLI does.
std::string write_gpu_checkpoint(const std::string& checkpoints, cuda::GpuTrainer& trainer, const ModelConfig& config,
                                 const TrainOptions& options) {
  Model host = Model::from_config(config, 0);
  const std::vector<float> params = trainer.download_params();
  std::copy(params.begin(), params.end(), host.params());
  CheckpointRecord record;
  record.options = options;
  record.batch_size = kBatch;
  record.seq_len = kSeq;
  record.sampler.dataset_size = 1;
  return write_checkpoint(checkpoints, host, trainer.export_state(), record);
}

struct Variant {
  cuda::Recipe recipe;
  bool fused;
};

class CudaResume : public ::testing::TestWithParam<Variant> {};

TEST_P(CudaResume, ThreePlusThreeStepsEqualSixBitForBit) {
  SKIP_WITHOUT_GPU();
  const ModelConfig config = tiny_config();
  const Model initial = Model::from_config(config, 8);
  const TrainOptions options = options_for(GetParam().fused);
  const cuda::GpuOptions gpu{GetParam().recipe, GetParam().fused, 0};

  cuda::GpuTrainer straight(config, initial.params(), options, gpu, kBatch, kSeq);
  std::vector<double> straight_losses;
  for (int s = 0; s < kSteps; ++s) straight_losses.push_back(straight.step(batch_of_step(s, config.vocab_size)).loss);

  test_util::TempFolder temp;
  std::string folder;
  {
    cuda::GpuTrainer first(config, initial.params(), options, gpu, kBatch, kSeq);
    for (int s = 0; s < kStop; ++s) EXPECT_EQ(first.step(batch_of_step(s, config.vocab_size)).loss, straight_losses[s]);
    folder = write_gpu_checkpoint(temp.file("checkpoints"), first, config, options);
  }
  // A new "process": the trainer rebuilt from the files alone.
  const LoadedCheckpoint loaded = load_checkpoint(folder);
  ASSERT_EQ(loaded.state.step, kStop);
  cuda::GpuTrainer resumed(config, loaded.model.params(), loaded.record.options, gpu, kBatch, kSeq);
  resumed.import_state(loaded.state);
  EXPECT_EQ(resumed.steps_done(), kStop);
  for (int s = kStop; s < kSteps; ++s)
    EXPECT_EQ(resumed.step(batch_of_step(s, config.vocab_size)).loss, straight_losses[s]) << "step " << s + 1;

  EXPECT_EQ(first_difference(resumed.download_params(), straight.download_params()), -1);
  const TrainState a = resumed.export_state(), b = straight.export_state();
  EXPECT_EQ(a.step, b.step);
  EXPECT_EQ(first_difference(a.exp_avg, b.exp_avg), -1);
  EXPECT_EQ(first_difference(a.exp_avg_sq, b.exp_avg_sq), -1);
  EXPECT_NE(straight_losses.front(), straight_losses.back());  // it trained
}

INSTANTIATE_TEST_SUITE_P(Recipes, CudaResume,
                         ::testing::Values(Variant{cuda::Recipe::Bf16, false}, Variant{cuda::Recipe::Bf16, true},
                                           Variant{cuda::Recipe::MixedMaster, false},
                                           Variant{cuda::Recipe::MixedMaster, true}),
                         [](const ::testing::TestParamInfo<Variant>& info) {
                           return std::string(cuda::recipe_name(info.param.recipe)) + (info.param.fused ? "_fused" : "");
                         });

TEST(CudaResumeState, ExportImportRoundTrip) {
  SKIP_WITHOUT_GPU();
  const ModelConfig config = tiny_config();
  const Model initial = Model::from_config(config, 9);
  const TrainOptions options = options_for(false);
  for (const cuda::Recipe recipe : {cuda::Recipe::Bf16, cuda::Recipe::MixedMaster}) {
    cuda::GpuTrainer trainer(config, initial.params(), options, {recipe, false, 0}, kBatch, kSeq);
    trainer.step(batch_of_step(0, config.vocab_size));
    const TrainState exported = trainer.export_state();
    ASSERT_EQ(exported.exp_avg.size(), initial.buffer_size());
    EXPECT_EQ(exported.step, 1);
    double norm = 0.0;
    for (float m : exported.exp_avg) norm += std::fabs(m);
    EXPECT_GT(norm, 0.0) << cuda::recipe_name(recipe);

    cuda::GpuTrainer other(config, initial.params(), options, {recipe, false, 0}, kBatch, kSeq);
    other.import_state(exported);
    const TrainState again = other.export_state();
    EXPECT_EQ(again.step, 1);
    EXPECT_EQ(first_difference(again.exp_avg, exported.exp_avg), -1) << cuda::recipe_name(recipe);
    EXPECT_EQ(first_difference(again.exp_avg_sq, exported.exp_avg_sq), -1) << cuda::recipe_name(recipe);

    TrainState wrong = exported;
    wrong.exp_avg.pop_back();
    EXPECT_THROW(other.import_state(wrong), Error);
  }
}

// GPU -> CPU and CPU -> GPU: the step after resuming gives the loss the other device gives, within bf16 precision.
TEST(CudaResumeState, CheckpointsMoveBetweenDevices) {
  SKIP_WITHOUT_GPU();
  const ModelConfig config = tiny_config();
  Model initial = Model::from_config(config, 10);
  for (size_t i = 0; i < initial.buffer_size(); ++i) initial.params()[i] = bf16_to_f32(f32_to_bf16(initial.params()[i]));
  const TrainOptions options = options_for(false);
  const cuda::GpuOptions gpu{cuda::Recipe::MixedMaster, false, 0};
  test_util::TempFolder temp;

  cuda::GpuTrainer gpu_run(config, initial.params(), options, gpu, kBatch, kSeq);
  for (int s = 0; s < kStop; ++s) gpu_run.step(batch_of_step(s, config.vocab_size));
  LoadedCheckpoint from_gpu = load_checkpoint(write_gpu_checkpoint(temp.file("gpu"), gpu_run, config, options));
  Trainer cpu_resumed(from_gpu.model, options, kBatch, kSeq);
  cpu_resumed.load_state(std::move(from_gpu.state));
  const double gpu_next = gpu_run.step(batch_of_step(kStop, config.vocab_size)).loss;
  const double cpu_next = cpu_resumed.step({batch_of_step(kStop, config.vocab_size)}).loss;
  EXPECT_NEAR(cpu_next, gpu_next, kCrossDeviceLoss * gpu_next);

  Model cpu_model = Model::from_config(config, 10);
  std::copy(initial.params(), initial.params() + initial.buffer_size(), cpu_model.params());
  Trainer cpu_run(cpu_model, options, kBatch, kSeq);
  for (int s = 0; s < kStop; ++s) cpu_run.step({batch_of_step(s, config.vocab_size)});
  cuda::GpuTrainer gpu_resumed(config, cpu_model.params(), options, gpu, kBatch, kSeq);
  gpu_resumed.import_state(cpu_run.state());
  const double cpu_after = cpu_run.step({batch_of_step(kStop, config.vocab_size)}).loss;
  const double gpu_after = gpu_resumed.step(batch_of_step(kStop, config.vocab_size)).loss;
  EXPECT_NEAR(gpu_after, cpu_after, kCrossDeviceLoss * cpu_after);
  EXPECT_EQ(gpu_resumed.steps_done(), kStop + 1);
}

TEST(CudaResumeState, EvaluateOnlyTrainerScoresAsATrainingOne) {
  SKIP_WITHOUT_GPU();
  const std::string folder = GoldenFixture::open("mixtral").folder;
  const ModelConfig config = load_config(folder);
  cuda::GpuOptions eval_only;
  eval_only.evaluate_only = true;
  cuda::GpuTrainer scorer(config, nullptr, TrainOptions{}, eval_only, kBatch, kSeq);
  cuda::GpuTrainer trainer(config, nullptr, TrainOptions{}, {cuda::Recipe::Bf16, false, 0}, kBatch, kSeq);
  scorer.load_checkpoint(folder);
  trainer.load_checkpoint(folder);
  EXPECT_EQ(scorer.gradient_bytes() + scorer.optimizer_bytes(), 0u);
  const Batch batch = batch_of_step(0, config.vocab_size);
  const cuda::GpuLoss a = scorer.evaluate(batch), b = trainer.evaluate(batch);
  EXPECT_EQ(a.ce_sum, b.ce_sum);
  EXPECT_EQ(a.counted, b.counted);
  EXPECT_THROW(scorer.step(batch), Error);
}

// --- the command line -------------------------------------------------------------------------------------------------

test_util::CommandResult moetune(const test_util::TempFolder& temp, const std::string& arguments) {
  return test_util::run_moetune(temp.path(), arguments);
}

std::vector<double> losses_of(const std::string& metrics) {
  std::vector<double> losses;
  for (const std::string& line : test_util::lines_of(test_util::read_text(metrics)))
    losses.push_back(nlohmann::json::parse(line).at("loss").get<double>());
  return losses;
}

double eval_loss(const test_util::CommandResult& result) {
  const size_t at = result.out.find("loss ");
  return at == std::string::npos ? std::nan("") : std::stod(result.out.substr(at + 5));
}

// `train --device cuda --model DIR` (streamed to the GPU), checkpoints, --resume on the GPU bit for bit, --resume of
// the GPU checkpoint on the CPU, the final model in bf16, and `eval --device cuda` against `eval` on the CPU.
TEST(CudaResumeCli, TrainResumeAndEvalOnTheGpu) {
  SKIP_WITHOUT_GPU();
  test_util::TempFolder temp;
  test_util::copy_golden("mixtral", temp.file("mixtral"));
  for (const char* recipe : {"bf16", "mixed"}) {
    SCOPED_TRACE(recipe);
    const std::string flags = std::string("train --device cuda --model mixtral --recipe ") + recipe +
                              " --seq-len 32 --batch-size 2 --warmup 1 --save-every 2 --eval-every 2";
    const auto straight = moetune(temp, flags + " --steps 4 --output straight");
    ASSERT_EQ(straight.status, 0) << describe(straight);
    EXPECT_NE(straight.err.find("to the GPU"), std::string::npos) << describe(straight);
    const auto first = moetune(temp, flags + " --steps 2 --schedule-steps 4 --output run");
    ASSERT_EQ(first.status, 0) << describe(first);
    const auto resumed = moetune(temp, "train --resume run/checkpoints --steps 4");
    ASSERT_EQ(resumed.status, 0) << describe(resumed);
    const std::vector<double> expected = losses_of(temp.file("straight/metrics.jsonl"));
    ASSERT_EQ(expected.size(), 4u);
    EXPECT_EQ(losses_of(temp.file("run/metrics.jsonl")), expected);
    EXPECT_EQ(test_util::read_text(temp.file("run/checkpoints/step-4/trainer_state.safetensors")),
              test_util::read_text(temp.file("straight/checkpoints/step-4/trainer_state.safetensors")));
    EXPECT_EQ(test_util::read_json(temp.file("run/final/config.json")).at("dtype"), "bfloat16");
    EXPECT_TRUE(fs::exists(temp.file("run/final/generation_config.json")));

    // The GPU checkpoint of step 2 continues on the CPU, within bf16 precision of the GPU's step 3.
    const auto on_cpu = moetune(temp, "train --resume run/checkpoints/step-2 --device cpu --steps 3 --output cpu");
    ASSERT_EQ(on_cpu.status, 0) << describe(on_cpu);
    const std::vector<double> cpu_losses = losses_of(temp.file("cpu/metrics.jsonl"));
    ASSERT_EQ(cpu_losses.size(), 3u);
    EXPECT_NEAR(cpu_losses[2], expected[2], kCrossDeviceLoss * expected[2]);

    const auto gpu_eval = moetune(temp, "eval --device cuda --model run/final --data run/eval_tokens.jsonl --seq-len 32 "
                                        "--batch-size 3");
    ASSERT_EQ(gpu_eval.status, 0) << describe(gpu_eval);
    const auto cpu_eval = moetune(temp, "eval --model run/final --data run/eval_tokens.jsonl --seq-len 32 --batch-size 3");
    ASSERT_EQ(cpu_eval.status, 0) << describe(cpu_eval);
    EXPECT_NEAR(eval_loss(gpu_eval), eval_loss(cpu_eval), kCrossDeviceLoss * eval_loss(cpu_eval));
    EXPECT_EQ(gpu_eval.out.substr(0, gpu_eval.out.find(" loss")), cpu_eval.out.substr(0, cpu_eval.out.find(" loss")));
    fs::remove_all(temp.file("straight"));
    fs::remove_all(temp.file("run"));
    fs::remove_all(temp.file("cpu"));
  }
}

}  // namespace
}  // namespace moetune::testing
