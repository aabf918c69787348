// Why: expert parallelism and data parallelism must not change the math. Two GPUs, each with one sequence, must give
// the loss, the gradients and the training trajectory of one GPU that sees both sequences (both ranks' label counts
// equal, so the mean of the ranks' mean losses is the mean loss of the whole batch): EP=2 (each rank holds half of
// the experts, tokens exchanged over NCCL) and DP=2 (experts replicated, every gradient summed). Every token is routed
// to every expert (top_k = E) so that bf16 rounding differences between a batch of 2 and two batches of 1 cannot flip
// a routing decision and hide the comparison (see test_cuda_engine.cpp).
#include <algorithm>
#include <cstdio>

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
  std::vector<float> grads;  // the rank's layout
  std::vector<double> losses;
  double ce = 0.0;
};

struct ParallelRun {
  int ep = 1, dp = 1;
  bool nvlink = false;  // the NVLink direct exchange instead of NCCL send/receive
};

// Rank body: the trainer of this rank's layout, one row of each batch.
RankResult run_rank(parallel::NcclComm& world, const ParallelRun& run, const ModelConfig& config, const std::vector<float>& params,
                    const std::vector<Batch>& batches, bool fused, int train_steps) {
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
  TrainOptions options;
  options.aux_loss = false;
  options.lr = 3e-3;
  options.total_steps = std::max(train_steps, 1);
  options.max_grad_norm = fused ? 0.0 : 1.0;  // clipping by the global norm (over every rank's experts) when not fused
  cuda::GpuOptions gpu;
  gpu.recipe = cuda::Recipe::Bf16;
  gpu.fused_optimizer = fused;
  gpu.world = &comms.world;
  gpu.expert_group = run.ep > 1 ? &comms.ep : nullptr;
  gpu.expert_replicas = &comms.dp;
  gpu.expert_exchange = run.nvlink ? cuda::ExchangeBackend::NvlinkDirect : cuda::ExchangeBackend::Nccl;
  cuda::GpuTrainer trainer(local, local_params.data(), options, gpu, 1, batches[0].seq_len);
  RankResult result;
  if (train_steps == 0) {
    const cuda::GpuLoss loss = trainer.compute_gradients(row_of(batches[0], rank));
    result.ce = loss.ce_sum / static_cast<double>(loss.counted);
    result.grads = trainer.download_grads();
  } else {
    for (int s = 0; s < train_steps; ++s) result.losses.push_back(trainer.step(row_of(batches[s], rank)).loss);
  }
  return result;
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

  const std::vector<RankResult> ranks = run_ranks<RankResult>(2, [&](parallel::NcclComm& world) {
    return run_rank(world, run, config, params, {batch}, false, 0);
  });
  double worst = 0.0;
  for (int r = 0; r < 2; ++r) {
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
  std::printf("[parallel EP %d x DP %d%s] worst gradient relative norm error vs one GPU %.3g\n", run.ep, run.dp, run.nvlink ? " nvlink" : "", worst);
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
    const std::vector<RankResult> ranks = run_ranks<RankResult>(2, [&](parallel::NcclComm& world) {
      return run_rank(world, run, config, params, batches, fused, steps);
    });
    for (int s = 0; s < steps; ++s) {
      EXPECT_EQ(ranks[0].losses[s], ranks[1].losses[s]) << "step " << s << ": the ranks report different losses";
      EXPECT_NEAR(ranks[0].losses[s], expected[s], 5e-3 * expected[s]) << "step " << s << (fused ? " fused" : "");
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, CudaParallelTraining,
                         ::testing::Values(ParallelRun{2, 1, false}, ParallelRun{1, 2, false}, ParallelRun{2, 1, true}),
                         [](const auto& info) {
                           return "ep" + std::to_string(info.param.ep) + "_dp" + std::to_string(info.param.dp) +
                                  (info.param.nvlink ? "_nvlink" : "");
                         });

}  // namespace
}  // namespace moetune::testing
