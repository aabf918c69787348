// Why: the NCCL expert exchange only moves rows, so it must move them EXACTLY where the oracle (parallel/ep_reference)
// says, bit for bit. Each rank (a thread per GPU, multi_gpu.h) routes its tokens with the engine's own kernels
// (moe_build_routing, moe_gather), plans, dispatches rows whose first values are their source rank and token (DeepEP
// style: a misrouted row names itself), and the main thread compares every rank's expert-side rows, local expert
// offsets and (rank, token, slot) tags with ep_dispatch / ep_plan; from_experts(to_experts(x)) must return x bit for
// bit, and the engine's combine over the returned rows must equal ep_combine with identity experts. Cases: uneven
// token counts, ranks without tokens, experts nobody picks, a rank whose experts receive nothing, a capacity overflow
// (every rank must fail, none may hang). The permute kernel and the one-rank exchange run on one GPU; the rest needs
// 2 (or 4) GPUs. Data parallelism: the EP/DP splits and the gradient mean, bf16 and fp32, all-reduce and ZeRO-1
// reduce-scatter + all-gather, against the CPU mean.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

#include "../parallel/ep_routing_util.h"
#include "cuda_test_util.h"
#include "gpu/expert_exchange.h"
#include "gpu/gradient_sync.h"
#include "multi_gpu.h"
#include "ops/cuda/moe_permute.h"
#include "parallel/ep_reference.h"
#include "parallel/exchange_layout.h"

namespace moetune::testing {
namespace {

using cuda::bf16;
using cuda::DeviceBuffer;
using parallel::EpPlan;
using parallel::EpRouting;

std::vector<float> to_floats(const std::vector<bf16>& values) {
  std::vector<float> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) out[i] = __bfloat162float(values[i]);
  return out;
}

std::vector<bf16> to_bf16(const std::vector<float>& values) {
  std::vector<bf16> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) out[i] = __float2bfloat16(values[i]);
  return out;
}

template <class T>
std::vector<T> download(const T* device, size_t count) {
  std::vector<T> host(count);
  if (count) CUDA_CHECK(cudaMemcpy(host.data(), device, count * sizeof(T), cudaMemcpyDeviceToHost));
  return host;
}

std::vector<int> all_experts(int experts) {
  std::vector<int> pool(experts);
  std::iota(pool.begin(), pool.end(), 0);
  return pool;
}

// ---- the permute kernel alone (one GPU) -------------------------------------------------------------------------------

TEST(CudaExpertExchange, PermuteFollowsTheLayout) {
  SKIP_WITHOUT_GPU();
  const int P = 3, E = 6, K = 2;
  const std::vector<EpRouting> routing = random_ep_routing({40, 0, 25}, K, {0, 2, 3, 5}, 7);
  std::vector<SortedRows> sorted;
  for (const EpRouting& r : routing) sorted.push_back(sort_by_expert(r, E, K));
  const parallel::ExchangeLayout layout = parallel::exchange_layout(offsets_table(sorted), P, E, 1, 1000, 1000);
  ASSERT_GT(layout.recv_rows, 0);
  DeviceBuffer<int32_t> start(layout.segment_start), source(layout.segment_source);
  for (const int width : {64, 5}) {
    SCOPED_TRACE("width " + std::to_string(width));
    const size_t count = static_cast<size_t>(layout.recv_rows) * width;
    const std::vector<bf16> staged = to_bf16(random_floats(count, 3 + width));
    DeviceBuffer<bf16> staging(staged), expert_rows(count), back(count);
    cuda::exchange_gather_rows(expert_rows.data(), staging.data(), start.data(), source.data(), layout.segments(),
                               layout.recv_rows, width, nullptr);
    back.zero();
    cuda::exchange_scatter_rows(back.data(), expert_rows.data(), start.data(), source.data(), layout.segments(),
                                layout.recv_rows, width, nullptr);
    std::vector<bf16> expected(count);
    for (int32_t o = 0; o < layout.recv_rows; ++o) {
      const int32_t g = parallel::exchange_staging_row(layout.segment_start.data(), layout.segment_source.data(),
                                                       layout.segments(), o);
      std::copy_n(&staged[static_cast<size_t>(g) * width], width, &expected[static_cast<size_t>(o) * width]);
    }
    EXPECT_EQ(first_difference(expert_rows.download(), expected), -1);
    EXPECT_EQ(first_difference(back.download(), staged), -1);
  }
}

// ---- dispatch and return against the oracle ---------------------------------------------------------------------------

struct ExchangeCase {
  std::vector<int> tokens;  // per rank (< 256, so token indices are exact in bf16); ranks = tokens.size()
  int experts, top_k, hidden;
  std::vector<int> pool;  // experts that may be picked
  uint32_t seed;
};

struct RankResult {
  std::vector<bf16> gathered, expert_rows, back, tags;  // tags: (recv_rows, 3) = (source rank, token, slot)
  std::vector<int32_t> local_offsets;
  std::vector<float> combined;  // (tokens, hidden)
};

// Token t of rank s: [s, t, random...], rounded to bf16.
std::vector<std::vector<float>> marked_tokens(const ExchangeCase& c) {
  std::vector<std::vector<float>> x(c.tokens.size());
  for (size_t s = 0; s < c.tokens.size(); ++s) {
    x[s] = round_to_bf16(random_floats(static_cast<size_t>(c.tokens[s]) * c.hidden, c.seed + 100 * s));
    for (int t = 0; t < c.tokens[s]; ++t) {
      x[s][static_cast<size_t>(t) * c.hidden] = static_cast<float>(s);
      x[s][static_cast<size_t>(t) * c.hidden + 1] = static_cast<float>(t);
    }
  }
  return x;
}

RankResult exchange_on_rank(const parallel::NcclComm& comm, const ExchangeCase& c, const EpRouting& routing,
                            const std::vector<float>& x_host, int64_t max_rows) {
  const int r = comm.rank(), T = routing.tokens, K = c.top_k, E = c.experts, H = c.hidden;
  const long rows = static_cast<long>(T) * K;
  cudaStream_t stream = nullptr;
  CUDA_CHECK(cudaStreamCreate(&stream));

  DeviceBuffer<int32_t> top_index(routing.top_index), offsets(E + 1), row_token(rows), row_slot(rows),
      token_slot_row(rows);
  DeviceBuffer<char> routing_scratch(cuda::moe_routing_scratch_bytes(T, E, K));
  DeviceBuffer<float> top_weight(routing.top_weight);
  DeviceBuffer<bf16> x = to_device_bf16(x_host), gathered(rows * H), back(rows * H), out(static_cast<size_t>(T) * H);
  cuda::moe_build_routing(offsets.data(), row_token.data(), row_slot.data(), token_slot_row.data(), top_index.data(),
                          T, E, K, routing_scratch.data(), stream);
  cuda::moe_gather(gathered.data(), x.data(), row_token.data(), rows, H, stream);

  cuda::ExpertExchange exchange(comm, {E, max_rows, H, 2, 0});
  DeviceBuffer<bf16> staging(exchange.staging_elements());
  exchange.plan(0, offsets.data(), stream);
  const int32_t recv = exchange.recv_rows(0);
  DeviceBuffer<bf16> expert_rows(static_cast<size_t>(recv) * H);
  exchange.to_experts(0, gathered.data(), expert_rows.data(), H, staging.data(), stream);
  exchange.from_experts(0, expert_rows.data(), back.data(), H, staging.data(), stream);
  if (T > 0)
    cuda::moe_combine_forward(out.data(), back.data(), top_weight.data(), token_slot_row.data(), T, H, K, stream);

  // Slot 1, the same offsets, rows 3 wide (the scalar path): (rank, token, slot) of each sorted row.
  CUDA_CHECK(cudaStreamSynchronize(stream));
  const std::vector<int32_t> tokens_of_rows = row_token.download(), slots_of_rows = row_slot.download();
  std::vector<float> tags_host;
  for (long i = 0; i < rows; ++i)
    tags_host.insert(tags_host.end(), {static_cast<float>(r), static_cast<float>(tokens_of_rows[i]),
                                       static_cast<float>(slots_of_rows[i])});
  DeviceBuffer<bf16> tags = to_device_bf16(tags_host), expert_tags(static_cast<size_t>(recv) * 3);
  exchange.plan(1, offsets.data(), stream);
  exchange.to_experts(1, tags.data(), expert_tags.data(), 3, staging.data(), stream);
  CUDA_CHECK(cudaStreamSynchronize(stream));

  RankResult result;
  result.gathered = gathered.download();
  result.expert_rows = expert_rows.download();
  result.back = back.download();
  result.tags = expert_tags.download();
  result.local_offsets = download(exchange.local_offsets(0), static_cast<size_t>(exchange.local_experts()) + 1);
  result.combined = to_host_f32(out);
  CUDA_CHECK(cudaStreamDestroy(stream));
  return result;
}

void check_exchange(const ExchangeCase& c) {
  const int P = static_cast<int>(c.tokens.size()), H = c.hidden;
  const std::vector<EpRouting> routing = random_ep_routing(c.tokens, c.top_k, c.pool, c.seed);
  const EpPlan plan = parallel::ep_plan(routing, parallel::ExpertMap::contiguous(c.experts, P), c.top_k);
  const std::vector<std::vector<float>> x = marked_tokens(c);
  const int64_t max_rows = static_cast<int64_t>(*std::max_element(c.tokens.begin(), c.tokens.end())) * c.top_k;

  const std::vector<RankResult> results = run_ranks<RankResult>(P, [&](const parallel::NcclComm& comm) {
    return exchange_on_rank(comm, c, routing[comm.rank()], x[comm.rank()], max_rows);
  });

  const std::vector<std::vector<float>> dispatched = parallel::ep_dispatch(plan, x, H);
  const std::vector<std::vector<float>> combined = parallel::ep_combine(plan, routing, dispatched, H);
  for (int d = 0; d < P; ++d) {
    SCOPED_TRACE("rank " + std::to_string(d));
    const RankResult& got = results[d];
    const parallel::EpRecvLayout& recv = plan.recv[d];
    EXPECT_EQ(got.local_offsets, recv.expert_offsets);
    EXPECT_EQ(first_difference(to_floats(got.expert_rows), dispatched[d]), -1) << "dispatched rows";
    ASSERT_EQ(got.tags.size(), static_cast<size_t>(recv.rows()) * 3);
    const std::vector<float> tags = to_floats(got.tags);
    for (int o = 0; o < recv.rows(); ++o) {
      ASSERT_EQ(tags[3 * o], recv.src_rank[o]) << "row " << o;
      ASSERT_EQ(tags[3 * o + 1], recv.src_token[o]) << "row " << o;
      ASSERT_EQ(tags[3 * o + 2], recv.src_slot[o]) << "row " << o;
    }
    EXPECT_EQ(first_difference(got.back, got.gathered), -1) << "from_experts(to_experts(x)) != x";
    if (c.tokens[d] > 0) EXPECT_LT(relative_norm_error(got.combined, combined[d]), kBf16RoundTrip);
  }
}

TEST(CudaExpertExchange, OneRankIsACopy) {
  SKIP_WITHOUT_GPU();
  check_exchange({{60}, 8, 2, 64, all_experts(8), 1});
  check_exchange({{0}, 8, 2, 64, all_experts(8), 2});
}

TEST(CudaExpertExchange, TwoRanksUnevenAndEmpty) {
  SKIP_WITHOUT_GPUS(2);
  check_exchange({{100, 37}, 8, 2, 128, all_experts(8), 11});          // uneven token counts
  check_exchange({{0, 90}, 8, 3, 64, all_experts(8), 12});             // rank 0 has no tokens
  check_exchange({{70, 50}, 8, 2, 64, {0, 2, 3, 6}, 13});              // experts 1, 4, 5, 7 get nothing
  check_exchange({{70, 50}, 8, 2, 72, {0, 1, 2, 3}, 14});              // rank 1's experts get nothing
  check_exchange({{255, 1}, 16, 4, 40, all_experts(16), 15});          // a lopsided pair
}

TEST(CudaExpertExchange, FourRanks) {
  SKIP_WITHOUT_GPUS(4);
  check_exchange({{80, 0, 33, 120}, 8, 2, 64, all_experts(8), 21});
  check_exchange({{50, 60, 70, 80}, 16, 4, 64, {1, 2, 5, 9, 10, 15}, 22});
}

TEST(CudaExpertExchange, OverflowFailsOnEveryRank) {
  SKIP_WITHOUT_GPUS(2);
  // Everything goes to rank 1's experts: it receives 2 * 50 * 2 = 200 rows; capacity 150.
  const std::vector<EpRouting> routing = random_ep_routing({50, 50}, 2, {4, 5, 6, 7}, 31);
  const std::vector<std::string> errors = run_ranks<std::string>(2, [&](const parallel::NcclComm& comm) {
    const EpRouting& mine = routing[comm.rank()];
    const SortedRows sorted = sort_by_expert(mine, 8, 2);
    DeviceBuffer<int32_t> offsets(sorted.offsets);
    cuda::ExpertExchange exchange(comm, {8, 100, 16, 1, 150});
    try {
      exchange.plan(0, offsets.data(), nullptr);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  });
  for (const std::string& error : errors) EXPECT_NE(error.find("rank 1 would receive 200 rows"), std::string::npos) << error;
}

// ---- data parallelism ---------------------------------------------------------------------------------------------------

struct DpResult {
  int ep_size = 0, ep_rank = 0, dp_size = 0, dp_rank = 0;
  std::vector<float> mean_bf16, mean_fp32, gathered;  // (count) after all_reduce_mean, all_reduce_mean_fp32, ZeRO-1
  std::vector<float> shard_bf16, shard_fp32;          // this rank's shard after the two reduce-scatters
};

// Rank r's gradient: count values, bf16-rounded, different per rank.
std::vector<float> gradient_of(int rank, size_t count) { return round_to_bf16(random_floats(count, 500 + rank)); }

void check_data_parallel(int world, int ep) {
  SCOPED_TRACE("world " + std::to_string(world) + ", ep " + std::to_string(ep));
  parallel::ProcessGroupInfo group;
  group.world_size = world;
  group.local_world_size = world;
  const parallel::ParallelLayout layout = parallel::make_parallel_layout(ep, 0, group, 8 * world);
  const size_t count = 1000;  // not a multiple of anything: the last shard is short, the arena padded

  const std::vector<DpResult> results = run_ranks<DpResult>(world, [&](const parallel::NcclComm& world_comm) {
    const int rank = world_comm.rank();
    cudaStream_t stream = nullptr;
    CUDA_CHECK(cudaStreamCreate(&stream));
    // ep_dp_comms takes a world of its own: a split of the test's communicator (one color: all ranks, same order).
    parallel::EpDpComms comms = parallel::ep_dp_comms(world_comm.split(0, rank), layout);
    const parallel::NcclComm& dp = comms.dp;
    DpResult result;
    result.ep_size = comms.ep.size();
    result.ep_rank = comms.ep.rank();
    result.dp_size = dp.size();
    result.dp_rank = dp.rank();
    const std::vector<float> mine = gradient_of(rank, count);
    const parallel::ShardLayout shards = parallel::shard_layout(count, dp.size());

    DeviceBuffer<bf16> grads = to_device_bf16(mine);
    cuda::all_reduce_mean(dp, grads.data(), count, stream);
    CUDA_CHECK(cudaStreamSynchronize(stream));
    result.mean_bf16 = to_host_f32(grads);

    DeviceBuffer<bf16> grads32 = to_device_bf16(mine);
    DeviceBuffer<float> scratch(shards.padded());
    cuda::all_reduce_mean_fp32(dp, grads32.data(), scratch.data(), count, stream);
    CUDA_CHECK(cudaStreamSynchronize(stream));
    result.mean_fp32 = to_host_f32(grads32);

    std::vector<float> padded = mine;
    padded.resize(shards.padded(), 0.0f);
    DeviceBuffer<bf16> arena = to_device_bf16(padded);
    cuda::reduce_scatter_mean(dp, arena.data(), shards, stream);
    CUDA_CHECK(cudaStreamSynchronize(stream));
    const std::vector<float> after = to_host_f32(arena);
    result.shard_bf16.assign(after.begin() + shards.begin(dp.rank()), after.begin() + shards.begin(dp.rank()) + shards.shard);
    cuda::all_gather_shards(dp, arena.data(), shards, stream);
    CUDA_CHECK(cudaStreamSynchronize(stream));
    result.gathered = to_host_f32(arena);

    cuda::reduce_scatter_mean_fp32(dp, grads.data(), scratch.data(), shards, stream);  // grads: already the mean
    CUDA_CHECK(cudaStreamSynchronize(stream));
    const std::vector<float> scratch_host = scratch.download();
    result.shard_fp32.assign(scratch_host.begin() + shards.begin(dp.rank()),
                             scratch_host.begin() + shards.begin(dp.rank()) + shards.shard);
    CUDA_CHECK(cudaStreamDestroy(stream));
    return result;
  });

  std::vector<std::vector<float>> gradients;
  for (int rank = 0; rank < world; ++rank) gradients.push_back(gradient_of(rank, count));
  for (int rank = 0; rank < world; ++rank) {
    SCOPED_TRACE("rank " + std::to_string(rank));
    const DpResult& got = results[rank];
    EXPECT_EQ(got.ep_size, layout.ep);
    EXPECT_EQ(got.ep_rank, layout.ep_rank(rank));
    EXPECT_EQ(got.dp_size, layout.dp);
    EXPECT_EQ(got.dp_rank, layout.dp_rank(rank));
    const std::vector<int> members = layout.dp_group(rank);
    std::vector<float> mean(count, 0.0f);
    for (size_t i = 0; i < count; ++i) {
      double sum = 0.0;
      for (int m : members) sum += gradients[m][i];
      mean[i] = static_cast<float>(sum / members.size());
    }
    const double bf16_tolerance = members.size() <= 2 ? kBf16RoundTrip : kBf16Chain;
    EXPECT_LT(relative_norm_error(got.mean_bf16, mean), bf16_tolerance);
    EXPECT_LT(relative_norm_error(got.mean_fp32, mean), kBf16RoundTrip);
    const parallel::ShardLayout shards = parallel::shard_layout(count, layout.dp);
    const size_t begin = shards.begin(layout.dp_rank(rank)), n = shards.data_count(layout.dp_rank(rank));
    const std::vector<float> shard_mean(mean.begin() + begin, mean.begin() + begin + n);
    EXPECT_LT(relative_norm_error({got.shard_bf16.begin(), got.shard_bf16.begin() + n}, shard_mean), bf16_tolerance);
    for (size_t i = n; i < shards.shard; ++i) ASSERT_EQ(got.shard_bf16[i], 0.0f) << "padding " << i;
    // The gathered arena: every member's shard, identical on every member.
    EXPECT_LT(relative_norm_error({got.gathered.begin(), got.gathered.begin() + count}, mean), bf16_tolerance);
    EXPECT_EQ(first_difference(got.gathered, results[members[0]].gathered), -1);
    // fp32 reduce-scatter of the bf16 mean from all_reduce_mean: the mean of equal values, exact up to fp32.
    const std::vector<float> shard_of_mean(got.mean_bf16.begin() + begin, got.mean_bf16.begin() + begin + n);
    EXPECT_LT(relative_norm_error({got.shard_fp32.begin(), got.shard_fp32.begin() + n}, shard_of_mean), 1e-6);
  }
}

TEST(CudaDataParallel, SplitsAndGradientMeans) {
  SKIP_WITHOUT_GPUS(2);
  const int world = std::min(gpu_count(), 8);
  check_data_parallel(world, 1);      // pure DP
  check_data_parallel(world, world);  // pure EP: the DP groups are single ranks
  if (world % 2 == 0 && world > 2) check_data_parallel(world, 2);
}

}  // namespace
}  // namespace moetune::testing
