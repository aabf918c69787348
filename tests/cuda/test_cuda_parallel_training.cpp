// Why: expert parallelism and data parallelism must not change the math. Two GPUs, each with one sequence, must give
// the loss, the gradients and the training trajectory of one GPU that sees both sequences (both ranks' label counts
// equal, so the mean of the ranks' mean losses is the mean loss of the whole batch): EP=2 (each rank holds half of
// the experts, tokens exchanged over NCCL) and DP=2 (experts replicated, every gradient summed). Every token is routed
// to every expert (top_k = E) so that bf16 rounding differences between a batch of 2 and two batches of 1 cannot flip
// a routing decision and hide the comparison (see test_cuda_engine.cpp). ZeRO-1 (sharded optimizer state) must not
// change it either: see the section at the end.
#include <algorithm>
#include <cstdio>
#include <string>

#include "cli/rank_slices.h"
#include "cuda_test_util.h"
#include "gpu/gpu_trainer.h"
#include "model/hf_names.h"
#include "multi_gpu.h"
#include "parallel/expert_shard.h"
#include "parallel/topology.h"
#include "tiny_models.h"

namespace moetune::testing {
namespace {

ModelConfig parallel_test_config() {
  nlohmann::json j = tiny_json("qwen3_moe");
  j["num_experts_per_tok"] = j["num_experts"];
  return parse_config(j, "parallel test config (qwen3_moe, top_k = E)");
}

// Both rows fully labelled: equal label counts per rank.
Batch labelled_batch(int rows, int seq, int vocab, uint64_t seed) {
  Batch b = random_batch(rows, seq, vocab, seed);
  b.labels = b.input_ids;
  return b;
}

Batch row_of(const Batch& batch, int row) {
  Batch b{1, batch.seq_len, {}, {}};
  const auto first = batch.input_ids.begin() + static_cast<long>(row) * batch.seq_len;
  b.input_ids.assign(first, first + batch.seq_len);
  const auto label = batch.labels.begin() + static_cast<long>(row) * batch.seq_len;
  b.labels.assign(label, label + batch.seq_len);
  return b;
}

// The shard's parameters (shard layout) cut from the full model's.
std::vector<float> shard_params(const ModelConfig& full, const ModelConfig& shard, const std::vector<float>& params) {
  return cli::slice_to_shard(cli::shard_runs(full, shard), params.data(), ParamLayout(shard).total_floats());
}

struct RankResult {
  bool overlapped = false;   // the engine overlaps its backward's return exchange (GpuEngine::overlaps_exchange)
  std::vector<float> grads;  // the rank's layout (compute_gradients)
  std::vector<double> losses, grad_norms;  // per step
  double ce = 0.0;
  std::vector<float> params;  // after the steps (download_params)
  TrainState state;           // after the steps (export_state)
  size_t optimizer_bytes = 0, parameter_bytes = 0;
};

struct ParallelRun {
  int ep = 1, dp = 1;
  bool nvlink = false;  // the NVLink direct exchange instead of NCCL send/receive
  bool overlap = true;  // GpuOptions::overlap_exchange (EP only: the return exchange beside a weight gradient)
};

// What a run trains: steps of `micro` micro-batches (batches[first_batch + s * micro + m]), or with steps 0 the
// gradients of batches[0] only.
struct Training {
  cuda::Recipe recipe = cuda::Recipe::Bf16;
  bool fused = false;
  double max_grad_norm = 1.0;
  int zero = 0;  // GpuOptions::zero_stage
  int micro = 1;
  int steps = 0;
  int first_batch = 0;
  long total_steps = 0;                 // the schedule's length (0: steps)
  const std::vector<TrainState>* resume = nullptr;  // per rank: imported before the first step
};

TrainOptions train_options(const Training& training) {
  TrainOptions options;
  options.aux_loss = false;
  options.lr = 3e-3;
  options.total_steps = std::max<long>(training.total_steps > 0 ? training.total_steps : training.steps, 1);
  options.max_grad_norm = training.max_grad_norm;
  return options;
}

// Rank body: the trainer of this rank's layout, one row of each batch.
RankResult run_rank(parallel::NcclComm& world, const ParallelRun& run, const ModelConfig& config, const std::vector<float>& params,
                    const std::vector<Batch>& batches, const Training& training) {
  const int rank = world.rank();
  const parallel::ProcessGroupInfo group{rank, world.size(), rank, world.size()};
  const parallel::ParallelLayout layout = parallel::make_parallel_layout(run.ep, run.dp, group, config.num_experts);
  parallel::EpDpComms comms = parallel::ep_dp_comms(std::move(world), layout);
  ModelConfig local = config;
  std::vector<float> local_params = params;
  if (run.ep > 1) {
    const parallel::ExpertRange range = layout.owned_experts(rank);
    local = parallel::expert_shard_config(config, range.begin, range.count());
    local_params = shard_params(config, local, params);
  }
  const TrainOptions options = train_options(training);
  cuda::GpuOptions gpu;
  gpu.recipe = training.recipe;
  gpu.fused_optimizer = training.fused;
  gpu.zero_stage = training.zero;
  gpu.world = &comms.world;
  gpu.expert_group = run.ep > 1 ? &comms.ep : nullptr;
  gpu.expert_replicas = &comms.dp;
  gpu.expert_exchange = run.nvlink ? cuda::ExchangeBackend::NvlinkDirect : cuda::ExchangeBackend::Nccl;
  gpu.overlap_exchange = run.overlap;
  cuda::GpuTrainer trainer(local, local_params.data(), options, gpu, 1, batches[0].seq_len);
  RankResult result;
  result.overlapped = trainer.engine().overlaps_exchange();
  result.optimizer_bytes = trainer.optimizer_bytes();
  result.parameter_bytes = trainer.parameter_bytes();
  if (training.steps == 0) {
    const cuda::GpuLoss loss = trainer.compute_gradients(row_of(batches[0], rank));
    result.ce = loss.ce_sum / static_cast<double>(loss.counted);
    result.grads = trainer.download_grads();
    return result;
  }
  if (training.resume) trainer.import_state((*training.resume)[rank]);
  for (int s = 0; s < training.steps; ++s) {
    std::vector<Batch> micro;
    for (int m = 0; m < training.micro; ++m) micro.push_back(row_of(batches[training.first_batch + s * training.micro + m], rank));
    const StepStats stats = trainer.step(micro);
    result.losses.push_back(stats.loss);
    result.grad_norms.push_back(stats.grad_norm);
  }
  result.params = trainer.download_params();  // collective with ZeRO-1: every rank
  result.state = trainer.export_state();
  return result;
}

// Every tensor of `layout` in `actual` against `expected`: identical bits (tolerance 0) or within a relative norm error.
void expect_same_tensors(const std::string& what, const ParamLayout& layout, const std::vector<float>& actual,
                         const std::vector<float>& expected, double tolerance) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  for (const ParamInfo& p : layout.params()) {
    const std::vector<float> a(actual.begin() + static_cast<long>(p.offset), actual.begin() + static_cast<long>(p.offset + p.numel));
    const std::vector<float> e(expected.begin() + static_cast<long>(p.offset), expected.begin() + static_cast<long>(p.offset + p.numel));
    if (tolerance == 0.0) {
      size_t differing = 0;
      for (size_t i = 0; i < a.size(); ++i) differing += a[i] != e[i];
      EXPECT_EQ(differing, 0u) << what << " of " << p.name << ": elements that differ";
    } else {
      EXPECT_LE(relative_norm_error(a, e), tolerance) << what << " of " << p.name;
    }
  }
}

class CudaParallelTraining : public ::testing::TestWithParam<ParallelRun> {};

TEST_P(CudaParallelTraining, TwoGpusGiveTheGradientsOfOne) {
  SKIP_WITHOUT_GPUS(2);
  const ParallelRun run = GetParam();
  const ModelConfig config = parallel_test_config();
  const Model model = bf16_model(config, 41);
  const std::vector<float> params(model.params(), model.params() + model.buffer_size());
  const Batch batch = labelled_batch(2, 64, config.vocab_size, 42);

  TrainOptions options;
  options.aux_loss = false;
  CUDA_CHECK(cudaSetDevice(0));
  cuda::GpuTrainer single(config, params.data(), options, {cuda::Recipe::Bf16, false, 0}, 2, 64);
  const cuda::GpuLoss loss = single.compute_gradients(batch);
  const std::vector<float> expected = single.download_grads();
  const double expected_ce = loss.ce_sum / static_cast<double>(loss.counted);

  const auto gradients = [&](const ParallelRun& layout) {
    return run_ranks<RankResult>(2, [&](parallel::NcclComm& world) {
      return run_rank(world, layout, config, params, {batch}, Training{});
    });
  };
  const std::vector<RankResult> ranks = gradients(run);
  double worst = 0.0;
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(ranks[r].overlapped, run.ep > 1 && run.overlap) << "rank " << r;
    EXPECT_NEAR(ranks[r].ce, expected_ce, 2e-3 * expected_ce) << "rank " << r;
    ModelConfig local = config;
    if (run.ep > 1) local = parallel::expert_shard_config(config, r * config.num_experts / 2, config.num_experts / 2);
    const std::vector<float> wanted = run.ep > 1 ? shard_params(config, local, expected) : expected;
    const ParamLayout layout(local);
    for (const ParamInfo& p : layout.params()) {
      const std::vector<float> a(ranks[r].grads.begin() + static_cast<long>(p.offset),
                                 ranks[r].grads.begin() + static_cast<long>(p.offset + p.numel));
      const std::vector<float> e(wanted.begin() + static_cast<long>(p.offset), wanted.begin() + static_cast<long>(p.offset + p.numel));
      const double error = relative_norm_error(a, e);
      worst = std::max(worst, error);
      EXPECT_LE(error, 2e-2) << "rank " << r << " gradient of " << p.name;
    }
  }
  std::printf("[parallel EP %d x DP %d%s%s] worst gradient relative norm error vs one GPU %.3g\n", run.ep, run.dp,
              run.nvlink ? " nvlink" : "", run.ep > 1 && !run.overlap ? " serial" : "", worst);
  if (run.ep > 1 && run.overlap) {  // the serial exchange runs the same kernels on the same inputs: the same bits
    ParallelRun serial = run;
    serial.overlap = false;
    const std::vector<RankResult> serial_ranks = gradients(serial);
    for (int r = 0; r < 2; ++r) {
      EXPECT_EQ(ranks[r].ce, serial_ranks[r].ce) << "rank " << r;
      const ModelConfig local = parallel::expert_shard_config(config, r * config.num_experts / 2, config.num_experts / 2);
      expect_same_tensors("rank " + std::to_string(r) + " gradients, overlap on vs off", ParamLayout(local),
                          ranks[r].grads, serial_ranks[r].grads, 0.0);
    }
  }
}

TEST_P(CudaParallelTraining, TwoGpusTrainLikeOne) {
  SKIP_WITHOUT_GPUS(2);
  const ParallelRun run = GetParam();
  const ModelConfig config = parallel_test_config();
  const Model model = bf16_model(config, 43);
  const std::vector<float> params(model.params(), model.params() + model.buffer_size());
  std::vector<Batch> batches;
  const int steps = 5;
  for (int s = 0; s < steps; ++s) batches.push_back(labelled_batch(2, 64, config.vocab_size, 300 + s));
  for (const bool fused : {false, true}) {
    TrainOptions options;
    options.aux_loss = false;
    options.lr = 3e-3;
    options.total_steps = steps;
    options.max_grad_norm = fused ? 0.0 : 1.0;
    CUDA_CHECK(cudaSetDevice(0));
    std::vector<double> expected;
    {
      cuda::GpuTrainer single(config, params.data(), options, {cuda::Recipe::Bf16, fused, 0}, 2, 64);
      for (const Batch& b : batches) expected.push_back(single.step(b).loss);
    }
    Training training;
    training.fused = fused;
    training.max_grad_norm = options.max_grad_norm;  // by the global norm (over every rank's experts) when not fused
    training.steps = steps;
    const auto train = [&](const ParallelRun& layout) {
      return run_ranks<RankResult>(2, [&](parallel::NcclComm& world) {
        return run_rank(world, layout, config, params, batches, training);
      });
    };
    const std::vector<RankResult> ranks = train(run);
    for (int s = 0; s < steps; ++s) {
      EXPECT_EQ(ranks[0].losses[s], ranks[1].losses[s]) << "step " << s << ": the ranks report different losses";
      EXPECT_NEAR(ranks[0].losses[s], expected[s], 5e-3 * expected[s]) << "step " << s << (fused ? " fused" : "");
    }
    if (run.ep > 1 && run.overlap) {  // overlap off: the same trajectory bit for bit (the fused step included)
      ParallelRun serial = run;
      serial.overlap = false;
      const std::vector<RankResult> serial_ranks = train(serial);
      for (int s = 0; s < steps; ++s)
        EXPECT_EQ(ranks[0].losses[s], serial_ranks[0].losses[s]) << "step " << s << (fused ? " fused" : "")
                                                                 << ": overlap on vs off";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, CudaParallelTraining,
                         ::testing::Values(ParallelRun{2, 1, false}, ParallelRun{1, 2, false}, ParallelRun{2, 1, true},
                                           ParallelRun{2, 1, false, false}, ParallelRun{2, 1, true, false}),
                         [](const auto& info) {
                           return "ep" + std::to_string(info.param.ep) + "_dp" + std::to_string(info.param.dp) +
                                  (info.param.nvlink ? "_nvlink" : "") + (info.param.overlap ? "" : "_serial");
                         });

// --- ZeRO-1 ---------------------------------------------------------------------------------------------------------
// The sharded optimizer state (GpuOptions::zero_stage 1) must train as the replicated one. Element by element its
// arithmetic is the same (AdamW is elementwise; with two ranks a reduce-scatter adds the same two bf16 values as the
// all-reduce), so without clipping the losses, parameters and optimizer state equal the replicated run's bit for bit;
// with clipping the squared norm is summed in another order, so there they agree within the DP tests' tolerances. Its
// gradient norm must count every element once (it equals the replicated run's), its optimizer memory must be this
// rank's share, and export_state must give the full state on every rank, which resumes with or without ZeRO.

constexpr double kLossTolerance = 5e-3;    // relative, per step: the DP tests' (and one GPU's) tolerance
constexpr double kWeightTolerance = 1e-2;  // relative norm error per tensor, as the parallel train CLI test

struct ZeroCase {
  ParallelRun run;
  cuda::Recipe recipe = cuda::Recipe::Bf16;
  bool fused = false;
  double max_grad_norm = 0.0;  // > 0: clipping (set low enough to act)
  int micro = 1;               // micro-batches per step
};

std::vector<Batch> zero_batches(const ModelConfig& config, int count) {
  std::vector<Batch> batches;
  for (int i = 0; i < count; ++i) batches.push_back(labelled_batch(2, 64, config.vocab_size, 600 + i));
  return batches;
}

// One GPU training on both rows of every batch: its losses, from `params` and (resume) a state to import.
std::vector<double> one_gpu_losses(const ModelConfig& config, const std::vector<float>& params,
                                   const std::vector<Batch>& batches, const Training& training,
                                   const TrainState* resume = nullptr) {
  CUDA_CHECK(cudaSetDevice(0));
  cuda::GpuOptions gpu;
  gpu.recipe = training.recipe;
  gpu.fused_optimizer = training.fused;
  cuda::GpuTrainer single(config, params.data(), train_options(training), gpu, 2, batches[0].seq_len);
  if (resume) single.import_state(*resume);
  std::vector<double> losses;
  for (int s = 0; s < training.steps; ++s) {
    const auto first = batches.begin() + training.first_batch + s * training.micro;
    losses.push_back(single.step(std::vector<Batch>(first, first + training.micro)).loss);
  }
  return losses;
}

ModelConfig local_config(const ModelConfig& config, const ParallelRun& run, int rank) {
  if (run.ep == 1) return config;
  const int per = config.num_experts / run.ep;
  return parallel::expert_shard_config(config, (rank % run.ep) * per, per);
}

class CudaZeroTraining : public ::testing::TestWithParam<ZeroCase> {};

TEST_P(CudaZeroTraining, ShardedStateTrainsLikeReplicated) {
  SKIP_WITHOUT_GPUS(2);
  const ZeroCase c = GetParam();
  const ModelConfig config = parallel_test_config();
  const Model model = bf16_model(config, 45);
  const std::vector<float> params(model.params(), model.params() + model.buffer_size());
  const int steps = 4;
  const std::vector<Batch> batches = zero_batches(config, steps * c.micro);
  Training training;
  training.recipe = c.recipe;
  training.fused = c.fused;
  training.max_grad_norm = c.max_grad_norm;
  training.micro = c.micro;
  training.steps = steps;
  const std::vector<double> expected = one_gpu_losses(config, params, batches, training);
  const std::vector<RankResult> plain = run_ranks<RankResult>(2, [&](parallel::NcclComm& world) {
    return run_rank(world, c.run, config, params, batches, training);
  });
  training.zero = 1;
  const std::vector<RankResult> zero = run_ranks<RankResult>(2, [&](parallel::NcclComm& world) {
    return run_rank(world, c.run, config, params, batches, training);
  });
  const bool exact = c.max_grad_norm == 0.0;
  if (!exact) ASSERT_GT(plain[0].grad_norms[0], c.max_grad_norm) << "clipping must act for this case to test it";
  for (int r = 0; r < 2; ++r) {
    SCOPED_TRACE("rank " + std::to_string(r));
    for (int s = 0; s < steps; ++s) {
      EXPECT_EQ(zero[r].losses[s], zero[0].losses[s]) << "step " << s << ": the ranks report different losses";
      EXPECT_NEAR(zero[r].losses[s], expected[s], kLossTolerance * expected[s]) << "step " << s << ": vs one GPU";
      if (exact) EXPECT_EQ(zero[r].losses[s], plain[r].losses[s]) << "step " << s;
      else EXPECT_NEAR(zero[r].losses[s], plain[r].losses[s], kLossTolerance * plain[r].losses[s]) << "step " << s;
      if (!c.fused)  // identical gradients at step 0 (and throughout without clipping): only the summation order differs
        EXPECT_NEAR(zero[r].grad_norms[s], plain[r].grad_norms[s], (s == 0 || exact ? 1e-5 : 1e-3) * plain[r].grad_norms[s])
            << "step " << s << ": the gradient norm must count every element once";
    }
    const ParamLayout layout(local_config(config, c.run, r));
    const double tolerance = exact ? 0.0 : kWeightTolerance;
    expect_same_tensors("parameters", layout, zero[r].params, plain[r].params, tolerance);
    expect_same_tensors("exp_avg", layout, zero[r].state.exp_avg, plain[r].state.exp_avg, tolerance);
    expect_same_tensors("exp_avg_sq", layout, zero[r].state.exp_avg_sq, plain[r].state.exp_avg_sq, tolerance);
    EXPECT_EQ(zero[r].state.step, steps);

    // Optimizer memory: this rank's share (replicated parameters over both ranks, experts over the DP group), plus at
    // most the segments' short tails and alignment.
    size_t replicated = 0, experts = 0;
    for (const ParamInfo& p : layout.params()) (p.name.find("mlp.experts.") != std::string::npos ? experts : replicated) += p.numel;
    const size_t per_element = c.recipe == cuda::Recipe::Bf16 ? 2 * sizeof(cuda::bf16) : 2 * sizeof(float);
    const double share = (static_cast<double>(replicated) / 2.0 + static_cast<double>(experts) / c.run.dp) * per_element;
    EXPECT_EQ(plain[r].optimizer_bytes, layout.total_floats() * per_element);
    EXPECT_GE(static_cast<double>(zero[r].optimizer_bytes), share);
    EXPECT_LE(static_cast<double>(zero[r].optimizer_bytes), 1.05 * share);
    if (c.recipe == cuda::Recipe::MixedMaster)  // the fp32 masters shrink as each moment does
      EXPECT_EQ(plain[r].parameter_bytes - zero[r].parameter_bytes, (plain[r].optimizer_bytes - zero[r].optimizer_bytes) / 2);
  }
  if (c.run.ep == 1) {  // both ranks hold (and export) the same full model
    expect_same_tensors("rank 1's parameters", ParamLayout(config), zero[1].params, zero[0].params, 0.0);
    expect_same_tensors("rank 1's exp_avg", ParamLayout(config), zero[1].state.exp_avg, zero[0].state.exp_avg, 0.0);
  }
  std::printf("[ZeRO-1 EP %d x DP %d, %s%s] optimizer %zu bytes per GPU (replicated %zu)\n", c.run.ep, c.run.dp,
              cuda::recipe_name(c.recipe), c.fused ? ", fused" : "", zero[0].optimizer_bytes, plain[0].optimizer_bytes);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, CudaZeroTraining,
    ::testing::Values(ZeroCase{{1, 2, false}, cuda::Recipe::Bf16, false, 0.05, 1},
                      ZeroCase{{1, 2, false}, cuda::Recipe::Bf16, true, 0.0, 1},
                      ZeroCase{{1, 2, false}, cuda::Recipe::MixedMaster, false, 0.0, 2},
                      ZeroCase{{1, 2, false}, cuda::Recipe::MixedMaster, true, 0.0, 1},
                      ZeroCase{{2, 1, false}, cuda::Recipe::MixedMaster, false, 0.0, 1},
                      ZeroCase{{2, 1, false}, cuda::Recipe::Bf16, true, 0.0, 1}),
    [](const auto& info) {
      const ZeroCase& c = info.param;
      return "ep" + std::to_string(c.run.ep) + "_dp" + std::to_string(c.run.dp) + "_" + cuda::recipe_name(c.recipe) +
             (c.fused ? "_fused" : "") + (c.max_grad_norm > 0 ? "_clip" : "") +
             (c.micro > 1 ? "_accum" + std::to_string(c.micro) : "");
    });

// A ZeRO-1 checkpoint holds the full state: the first half of a run with ZeRO-1 continues without it, and the reverse,
// exactly as the uninterrupted replicated run (recipe (b): the fp32 masters are the checkpoint's weights; no clipping),
// and on one GPU within the DP tolerance.
TEST(CudaZeroCheckpoint, StateMovesBetweenShardedReplicatedAndOneGpu) {
  SKIP_WITHOUT_GPUS(2);
  const ModelConfig config = parallel_test_config();
  const Model model = bf16_model(config, 47);
  const std::vector<float> params(model.params(), model.params() + model.buffer_size());
  const int steps = 4, half = 2;
  const std::vector<Batch> batches = zero_batches(config, steps);
  const ParallelRun dp2{1, 2, false};
  Training whole;
  whole.recipe = cuda::Recipe::MixedMaster;
  whole.max_grad_norm = 0.0;
  whole.steps = steps;
  const std::vector<RankResult> reference = run_ranks<RankResult>(2, [&](parallel::NcclComm& world) {
    return run_rank(world, dp2, config, params, batches, whole);
  });
  for (const int first : {1, 0}) {
    SCOPED_TRACE(first == 1 ? "ZeRO-1, then replicated" : "replicated, then ZeRO-1");
    Training head = whole;
    head.steps = half;
    head.total_steps = steps;
    head.zero = first;
    const std::vector<RankResult> before = run_ranks<RankResult>(2, [&](parallel::NcclComm& world) {
      return run_rank(world, dp2, config, params, batches, head);
    });
    const std::vector<TrainState> states = {before[0].state, before[1].state};
    Training tail = head;
    tail.first_batch = half;
    tail.zero = 1 - first;
    tail.resume = &states;
    const std::vector<RankResult> after = run_ranks<RankResult>(2, [&](parallel::NcclComm& world) {
      return run_rank(world, dp2, config, before[0].params, batches, tail);
    });
    for (int r = 0; r < 2; ++r) {
      for (int s = 0; s < half; ++s)
        EXPECT_EQ(after[r].losses[s], reference[r].losses[half + s]) << "rank " << r << ", step " << half + s;
      expect_same_tensors("rank " + std::to_string(r) + " parameters", ParamLayout(config), after[r].params,
                          reference[r].params, 0.0);
    }
    if (first == 1) {  // the ZeRO-1 state on one GPU
      Training one = tail;
      one.resume = nullptr;
      const std::vector<double> losses = one_gpu_losses(config, before[0].params, batches, one, &before[0].state);
      for (int s = 0; s < half; ++s)
        EXPECT_NEAR(losses[s], reference[0].losses[half + s], kLossTolerance * reference[0].losses[half + s])
            << "one GPU, step " << half + s;
    }
  }
}

}  // namespace
}  // namespace moetune::testing
