// Why: the expert exchange only moves rows, so it must move them EXACTLY where the oracle (parallel/ep_reference)
// says, bit for bit, with either backend (NCCL send/receive, or the NVLink direct copy). Each rank (a thread per GPU,
// multi_gpu.h) routes its tokens with the engine's own kernels (moe_build_routing, moe_gather), plans, dispatches rows
// whose first values are their source rank and token (DeepEP style: a misrouted row names itself), and the main thread
// compares every rank's expert-side rows, local expert offsets and (rank, token, slot) tags with ep_dispatch /
// ep_plan; from_experts(to_experts(x)) must return x bit for bit, and the engine's combine over the returned rows must
// equal ep_combine with identity experts. Cases, for both backends: uneven token counts, ranks without tokens, experts
// nobody picks, a rank whose experts receive nothing, a capacity overflow (every rank must fail, none may hang), and
// many layers back to back through one transient buffer without host synchronisation (a missing barrier lets a peer
// overwrite rows still being read). NVLink only: misuse (a foreign buffer, ranks disagreeing on the width) fails on
// every rank. The permute kernel, the NVLink copy kernel (ranks simulated by buffers of one GPU) and the one-rank
// exchange run on one GPU; the rest needs 2 (or 4) GPUs. A bandwidth print of both backends (no assertion). Data
// parallelism: the EP/DP splits and the gradient mean, bf16 and fp32, all-reduce and ZeRO-1 reduce-scatter +
// all-gather, against the CPU mean.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
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
#include "parallel/exchange_destinations.h"
#include "parallel/exchange_layout.h"

namespace moetune::testing {
namespace {

using cuda::bf16;
using cuda::DeviceBuffer;
using cuda::ExchangeBackend;
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

// The NVLink copy kernel alone: P ranks simulated by P blocks of one GPU (the kernel only follows pointers). Every
// source's to_experts must fill every owner's buffer exactly as ep_dispatch orders it and touch nothing else,
// from_experts must bring every row back; with disagreeing signatures nothing moves and the flag is set.
TEST(CudaExpertExchange, DirectCopyFollowsTheOracle) {
  SKIP_WITHOUT_GPU();
  const int P = 3, E = 6, K = 2, L = E / P;
  const std::vector<EpRouting> routing = random_ep_routing({40, 0, 25}, K, {0, 2, 3, 5}, 8);
  const EpPlan plan = parallel::ep_plan(routing, parallel::ExpertMap::contiguous(E, P), K);
  std::vector<SortedRows> sorted;
  for (const EpRouting& r : routing) sorted.push_back(sort_by_expert(r, E, K));
  const std::vector<int32_t> table = offsets_table(sorted);
  auto is_zero = [](bf16 v) { return __bfloat162float(v) == 0.0f; };
  for (const int width : {64, 5}) {
    SCOPED_TRACE("width " + std::to_string(width));
    // Token t of rank s: [s, t, random...]; rank s's sorted rows are its tokens in sorted order.
    std::vector<std::vector<float>> x(P);
    std::vector<DeviceBuffer<bf16>> send;
    std::vector<std::vector<bf16>> sent(P);
    for (int s = 0; s < P; ++s) {
      x[s] = round_to_bf16(random_floats(static_cast<size_t>(routing[s].tokens) * width, 40 + s + width));
      for (int t = 0; t < routing[s].tokens; ++t) {
        x[s][static_cast<size_t>(t) * width] = static_cast<float>(s);
        x[s][static_cast<size_t>(t) * width + 1] = static_cast<float>(t);
      }
      std::vector<float> rows;
      for (const int32_t t : sorted[s].token)
        rows.insert(rows.end(), x[s].begin() + static_cast<size_t>(t) * width, x[s].begin() + (t + 1) * width);
      sent[s] = to_bf16(rows);
      send.emplace_back(sent[s]);
    }
    const std::vector<std::vector<float>> dispatched = parallel::ep_dispatch(plan, x, width);

    const size_t stride = 256 * static_cast<size_t>(width);  // a simulated buffer: > all 130 rows
    std::vector<DeviceBuffer<bf16>> blocks;
    std::vector<bf16*> block_pointers;
    for (int d = 0; d < P; ++d) {
      blocks.emplace_back(2 * stride);  // two buffers per block; the copy uses the second (buffer_offset = stride)
      blocks.back().zero();
      block_pointers.push_back(blocks.back().data());
    }
    DeviceBuffer<bf16*> device_blocks(block_pointers);
    DeviceBuffer<int32_t> disagreement(1);
    disagreement.zero();
    std::vector<DeviceBuffer<int32_t>> offsets, bases;
    for (int s = 0; s < P; ++s) {
      offsets.emplace_back(sorted[s].offsets);
      bases.emplace_back(parallel::exchange_destination_base(table, P, E, s, 1000, 1000));
    }
    auto args_of = [&](int s) {
      cuda::DirectRowsArgs args;
      args.blocks = device_blocks.data();
      args.buffer_offset = stride;
      args.offsets = offsets[s].data();
      args.base = bases[s].data();
      args.disagreement = disagreement.data();
      args.experts = E;
      args.local_experts = L;
      args.width = width;
      args.rows = static_cast<int32_t>(sorted[s].token.size());
      return args;
    };

    for (int s = 0; s < P; ++s) {
      cuda::DirectRowsArgs args = args_of(s);
      args.send = send[s].data();
      cuda::exchange_direct_rows(args, true, nullptr);
    }
    for (int d = 0; d < P; ++d) {
      SCOPED_TRACE("owner " + std::to_string(d));
      const std::vector<bf16> all = blocks[d].download();
      const size_t received = dispatched[d].size();
      const std::vector<bf16> got(all.begin() + stride, all.begin() + stride + received);
      EXPECT_EQ(first_difference(to_floats(got), dispatched[d]), -1) << "dispatched rows";
      EXPECT_TRUE(std::all_of(all.begin(), all.begin() + stride, is_zero)) << "the other buffer was written";
      EXPECT_TRUE(std::all_of(all.begin() + stride + received, all.end(), is_zero)) << "rows past recv_rows written";
    }
    for (int s = 0; s < P; ++s) {
      SCOPED_TRACE("source " + std::to_string(s));
      DeviceBuffer<bf16> back(sent[s].size());
      back.zero();
      cuda::DirectRowsArgs args = args_of(s);
      args.receive = back.data();
      cuda::exchange_direct_rows(args, false, nullptr);
      EXPECT_EQ(first_difference(back.download(), sent[s]), -1) << "from_experts(to_experts(x)) != x";
    }
    EXPECT_EQ(disagreement.download()[0], 0);

    // Ranks disagreeing (another rank signed slot 1): nothing moves, the flag is set.
    DeviceBuffer<int32_t> agreed(std::vector<int32_t>{1, 0, 0, 0, width, -width});
    DeviceBuffer<bf16> back(sent[2].size());
    back.zero();
    cuda::DirectRowsArgs args = args_of(2);
    args.agreed = agreed.data();
    args.receive = back.data();
    cuda::exchange_direct_rows(args, false, nullptr);
    const std::vector<bf16> untouched = back.download();
    EXPECT_TRUE(std::all_of(untouched.begin(), untouched.end(), is_zero));
    EXPECT_EQ(disagreement.download()[0], 1);
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

// Both backends through exchange-owned expert buffers, as the engine uses them: buffer 0 receives the dispatched rows
// (expert_in), buffer 1 holds the expert side's results (identity experts: a copy) for from_experts.
RankResult exchange_on_rank(const parallel::NcclComm& comm, const ExchangeCase& c, const EpRouting& routing,
                            const std::vector<float>& x_host, int64_t max_rows, ExchangeBackend backend) {
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

  cuda::ExpertExchange exchange(comm, {E, max_rows, H, 2, 0, backend, 2});
  DeviceBuffer<bf16> staging(exchange.staging_elements());
  bf16* expert_rows = exchange.expert_rows_buffer(0);
  bf16* expert_results = exchange.expert_rows_buffer(1);
  exchange.plan(0, offsets.data(), stream);
  const int32_t recv = exchange.recv_rows(0);
  exchange.to_experts(0, gathered.data(), expert_rows, H, staging.data(), stream);
  if (recv > 0)
    CUDA_CHECK(cudaMemcpyAsync(expert_results, expert_rows, static_cast<size_t>(recv) * H * sizeof(bf16),
                               cudaMemcpyDeviceToDevice, stream));
  exchange.from_experts(0, expert_results, back.data(), H, staging.data(), stream);
  if (T > 0)
    cuda::moe_combine_forward(out.data(), back.data(), top_weight.data(), token_slot_row.data(), T, H, K, stream);

  // Slot 1, the same offsets, rows 3 wide (the scalar path): (rank, token, slot) of each sorted row.
  CUDA_CHECK(cudaStreamSynchronize(stream));
  const std::vector<int32_t> tokens_of_rows = row_token.download(), slots_of_rows = row_slot.download();
  std::vector<float> tags_host;
  for (long i = 0; i < rows; ++i)
    tags_host.insert(tags_host.end(), {static_cast<float>(r), static_cast<float>(tokens_of_rows[i]),
                                       static_cast<float>(slots_of_rows[i])});
  DeviceBuffer<bf16> tags = to_device_bf16(tags_host);
  exchange.plan(1, offsets.data(), stream);
  exchange.to_experts(1, tags.data(), expert_results, 3, staging.data(), stream);
  CUDA_CHECK(cudaStreamSynchronize(stream));

  RankResult result;
  result.gathered = gathered.download();
  result.expert_rows = download(expert_rows, static_cast<size_t>(recv) * H);
  result.back = back.download();
  result.tags = download(expert_results, static_cast<size_t>(recv) * 3);
  result.local_offsets = download(exchange.local_offsets(0), static_cast<size_t>(exchange.local_experts()) + 1);
  result.combined = to_host_f32(out);
  CUDA_CHECK(cudaStreamDestroy(stream));
  return result;
}

void check_exchange(const ExchangeCase& c, ExchangeBackend backend) {
  const int P = static_cast<int>(c.tokens.size()), H = c.hidden;
  const std::vector<EpRouting> routing = random_ep_routing(c.tokens, c.top_k, c.pool, c.seed);
  const EpPlan plan = parallel::ep_plan(routing, parallel::ExpertMap::contiguous(c.experts, P), c.top_k);
  const std::vector<std::vector<float>> x = marked_tokens(c);
  const int64_t max_rows = static_cast<int64_t>(*std::max_element(c.tokens.begin(), c.tokens.end())) * c.top_k;

  const std::vector<RankResult> results = run_ranks<RankResult>(P, [&](const parallel::NcclComm& comm) {
    return exchange_on_rank(comm, c, routing[comm.rank()], x[comm.rank()], max_rows, backend);
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

// Every exchange test runs for both backends.
class CudaExpertExchangeBackend : public ::testing::TestWithParam<ExchangeBackend> {};

INSTANTIATE_TEST_SUITE_P(Backends, CudaExpertExchangeBackend,
                         ::testing::Values(ExchangeBackend::Nccl, ExchangeBackend::NvlinkDirect),
                         [](const ::testing::TestParamInfo<ExchangeBackend>& info) {
                           return info.param == ExchangeBackend::Nccl ? std::string("Nccl")
                                                                      : std::string("NvlinkDirect");
                         });

TEST_P(CudaExpertExchangeBackend, OneRankIsACopy) {
  SKIP_WITHOUT_GPU();
  check_exchange({{60}, 8, 2, 64, all_experts(8), 1}, GetParam());
  check_exchange({{0}, 8, 2, 64, all_experts(8), 2}, GetParam());
}

TEST_P(CudaExpertExchangeBackend, TwoRanksUnevenAndEmpty) {
  SKIP_WITHOUT_GPUS(2);
  const ExchangeBackend b = GetParam();
  check_exchange({{100, 37}, 8, 2, 128, all_experts(8), 11}, b);          // uneven token counts
  check_exchange({{0, 90}, 8, 3, 64, all_experts(8), 12}, b);             // rank 0 has no tokens
  check_exchange({{70, 50}, 8, 2, 64, {0, 2, 3, 6}, 13}, b);              // experts 1, 4, 5, 7 get nothing
  check_exchange({{70, 50}, 8, 2, 72, {0, 1, 2, 3}, 14}, b);              // rank 1's experts get nothing
  check_exchange({{255, 1}, 16, 4, 40, all_experts(16), 15}, b);          // a lopsided pair
}

TEST_P(CudaExpertExchangeBackend, FourRanks) {
  SKIP_WITHOUT_GPUS(4);
  check_exchange({{80, 0, 33, 120}, 8, 2, 64, all_experts(8), 21}, GetParam());
  check_exchange({{50, 60, 70, 80}, 16, 4, 64, {1, 2, 5, 9, 10, 15}, 22}, GetParam());
}

TEST_P(CudaExpertExchangeBackend, OverflowFailsOnEveryRank) {
  SKIP_WITHOUT_GPUS(2);
  // Everything goes to rank 1's experts: it receives 2 * 50 * 2 = 200 rows; capacity 150.
  const std::vector<EpRouting> routing = random_ep_routing({50, 50}, 2, {4, 5, 6, 7}, 31);
  const std::vector<std::string> errors = run_ranks<std::string>(2, [&](const parallel::NcclComm& comm) {
    const EpRouting& mine = routing[comm.rank()];
    const SortedRows sorted = sort_by_expert(mine, 8, 2);
    DeviceBuffer<int32_t> offsets(sorted.offsets);
    cuda::ExpertExchange exchange(comm, {8, 100, 16, 1, 150, GetParam(), 1});
    try {
      exchange.plan(0, offsets.data(), nullptr);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  });
  for (const std::string& error : errors) EXPECT_NE(error.find("rank 1 would receive 200 rows"), std::string::npos) << error;
}

// The engine's pattern over many MoE layers, planned first, then enqueued without any host synchronisation: forward
// (to_experts into a per-layer buffer, the "experts" copy it into ONE shared transient buffer, from_experts out of it),
// then backward in reverse layer order (to_experts into the transient buffer, from_experts straight out of it). Each
// layer's rows differ, so a peer writing the next layer's rows into a buffer still being read shows up as wrong rows.
struct LayersResult {
  std::vector<std::vector<bf16>> sent, forward, backward;  // (layers) this rank's rows, and what came back
};

TEST_P(CudaExpertExchangeBackend, ManyLayersBackToBack) {
  SKIP_WITHOUT_GPUS(2);
  const int P = 2, E = 8, K = 2, H = 256, layers = 6;
  const std::vector<int> tokens = {120, 90};
  const int64_t max_rows = 120 * K;
  const std::vector<LayersResult> results = run_ranks<LayersResult>(P, [&](const parallel::NcclComm& comm) {
    const int r = comm.rank();
    cudaStream_t stream = nullptr;
    CUDA_CHECK(cudaStreamCreate(&stream));
    cuda::ExpertExchange exchange(comm, {E, max_rows, H, layers, 0, GetParam(), layers + 1});
    DeviceBuffer<bf16> staging(exchange.staging_elements());
    bf16* transient = exchange.expert_rows_buffer(layers);
    std::vector<DeviceBuffer<int32_t>> offsets;
    std::vector<DeviceBuffer<bf16>> rows, forward, backward;
    LayersResult result;
    for (int l = 0; l < layers; ++l) {
      // Layer l's routing differs per layer (and the two ranks' routings differ): seed by layer.
      const std::vector<EpRouting> routing = random_ep_routing(tokens, K, all_experts(E), 60 + l);
      const SortedRows sorted = sort_by_expert(routing[r], E, K);
      offsets.emplace_back(sorted.offsets);
      std::vector<float> values = round_to_bf16(random_floats(sorted.token.size() * H, 1000 * l + r));
      for (size_t i = 0; i < sorted.token.size(); ++i) {
        values[i * H] = static_cast<float>(l);
        values[i * H + 1] = static_cast<float>(r);
      }
      result.sent.push_back(to_bf16(values));
      rows.emplace_back(result.sent.back());
      forward.emplace_back(result.sent.back().size());
      backward.emplace_back(result.sent.back().size());
    }
    for (int l = 0; l < layers; ++l) exchange.plan(l, offsets[l].data(), stream);
    for (int l = 0; l < layers; ++l) {
      bf16* expert_in = exchange.expert_rows_buffer(l);
      exchange.to_experts(l, rows[l].data(), expert_in, H, staging.data(), stream);
      const size_t bytes = static_cast<size_t>(exchange.recv_rows(l)) * H * sizeof(bf16);
      if (bytes) CUDA_CHECK(cudaMemcpyAsync(transient, expert_in, bytes, cudaMemcpyDeviceToDevice, stream));
      exchange.from_experts(l, transient, forward[l].data(), H, staging.data(), stream);
    }
    for (int l = layers - 1; l >= 0; --l) {
      exchange.to_experts(l, forward[l].data(), transient, H, staging.data(), stream);
      exchange.from_experts(l, transient, backward[l].data(), H, staging.data(), stream);
    }
    CUDA_CHECK(cudaStreamSynchronize(stream));
    for (int l = 0; l < layers; ++l) {
      result.forward.push_back(forward[l].download());
      result.backward.push_back(backward[l].download());
    }
    CUDA_CHECK(cudaStreamDestroy(stream));
    return result;
  });
  for (int r = 0; r < P; ++r)
    for (int l = 0; l < layers; ++l) {
      SCOPED_TRACE("rank " + std::to_string(r) + ", layer " + std::to_string(l));
      EXPECT_EQ(first_difference(results[r].forward[l], results[r].sent[l]), -1) << "forward";
      EXPECT_EQ(first_difference(results[r].backward[l], results[r].sent[l]), -1) << "backward";
    }
}

// NVLink misuse fails on every rank, none hangs: a buffer the peers cannot reach (before any collective), and ranks
// passing different widths (the kernels move nothing; the next plan() fails everywhere).
TEST(CudaExpertExchange, DirectRejectsMisuseOnEveryRank) {
  SKIP_WITHOUT_GPUS(2);
  const std::vector<EpRouting> routing = random_ep_routing({40, 30}, 2, all_experts(8), 41);
  const std::vector<std::string> errors = run_ranks<std::string>(2, [&](const parallel::NcclComm& comm) {
    const SortedRows sorted = sort_by_expert(routing[comm.rank()], 8, 2);
    DeviceBuffer<int32_t> offsets(sorted.offsets);
    DeviceBuffer<bf16> rows(sorted.token.size() * 16), foreign(80 * 2 * 16);
    rows.zero();
    cuda::ExpertExchange exchange(comm, {8, 80, 16, 1, 0, ExchangeBackend::NvlinkDirect, 1});
    std::string seen;
    exchange.plan(0, offsets.data(), nullptr);
    try {
      exchange.to_experts(0, rows.data(), foreign.data(), 16, nullptr, nullptr);
    } catch (const Error& e) {
      seen = e.what();
    }
    const int width = comm.rank() == 0 ? 8 : 16;
    exchange.to_experts(0, rows.data(), exchange.expert_rows_buffer(0), width, nullptr, nullptr);
    try {
      exchange.plan(0, offsets.data(), nullptr);
    } catch (const Error& e) {
      return seen + " | " + e.what();
    }
    return seen + " | no error";
  });
  for (const std::string& error : errors) {
    EXPECT_NE(error.find("takes only the exchange's own expert buffers"), std::string::npos) << error;
    EXPECT_NE(error.find("passed different slots, expert buffers or widths"), std::string::npos) << error;
  }
}

// Not a test of speed (no assertion): prints what each backend moves per second on 2 GPUs for the geometry of the
// issue's benchmark (Qwen3-30B-A3B: H 2048, 128 experts, top-8; 4096 tokens per rank, routed uniformly): 32768 rows
// of 4 KiB per rank per call, about half of them (~67 MB) crossing NVLink each way.
struct Bandwidth {
  double to_ms = 0, from_ms = 0;
  int64_t rows = 0, remote_rows = 0;
};

TEST(CudaExpertExchange, BandwidthOfBothBackends) {
  SKIP_WITHOUT_GPUS(2);
  const int P = 2, E = 128, K = 8, H = 2048, T = 4096, warmup = 3, iterations = 20;
  const std::vector<EpRouting> routing = random_ep_routing({T, T}, K, all_experts(E), 77);
  for (const ExchangeBackend backend : {ExchangeBackend::Nccl, ExchangeBackend::NvlinkDirect}) {
    const std::vector<Bandwidth> results = run_ranks<Bandwidth>(P, [&](const parallel::NcclComm& comm) {
      const int r = comm.rank();
      std::vector<int32_t> offsets_host(E + 1, 0);
      for (const int32_t e : routing[r].top_index) ++offsets_host[e + 1];
      for (int e = 0; e < E; ++e) offsets_host[e + 1] += offsets_host[e];
      const int64_t rows = offsets_host[E];
      cudaStream_t stream = nullptr;
      CUDA_CHECK(cudaStreamCreate(&stream));
      DeviceBuffer<int32_t> offsets(offsets_host);
      DeviceBuffer<bf16> source(static_cast<size_t>(rows) * H), back(static_cast<size_t>(rows) * H);
      source.zero();
      cuda::ExpertExchange exchange(comm, {E, rows, H, 1, 0, backend, 2});
      DeviceBuffer<bf16> staging(exchange.staging_elements());
      bf16* expert_in = exchange.expert_rows_buffer(0);
      bf16* expert_out = exchange.expert_rows_buffer(1);
      exchange.plan(0, offsets.data(), stream);
      cudaEvent_t start = nullptr, middle = nullptr, stop = nullptr;
      CUDA_CHECK(cudaEventCreate(&start));
      CUDA_CHECK(cudaEventCreate(&middle));
      CUDA_CHECK(cudaEventCreate(&stop));
      for (int i = 0; i < warmup; ++i) {
        exchange.to_experts(0, source.data(), expert_in, H, staging.data(), stream);
        exchange.from_experts(0, expert_out, back.data(), H, staging.data(), stream);
      }
      CUDA_CHECK(cudaEventRecord(start, stream));
      for (int i = 0; i < iterations; ++i) exchange.to_experts(0, source.data(), expert_in, H, staging.data(), stream);
      CUDA_CHECK(cudaEventRecord(middle, stream));
      for (int i = 0; i < iterations; ++i) exchange.from_experts(0, expert_out, back.data(), H, staging.data(), stream);
      CUDA_CHECK(cudaEventRecord(stop, stream));
      CUDA_CHECK(cudaEventSynchronize(stop));
      float to_ms = 0, from_ms = 0;
      CUDA_CHECK(cudaEventElapsedTime(&to_ms, start, middle));
      CUDA_CHECK(cudaEventElapsedTime(&from_ms, middle, stop));
      Bandwidth result;
      result.to_ms = to_ms / iterations;
      result.from_ms = from_ms / iterations;
      result.rows = rows;
      const parallel::ExchangeLayout& layout = exchange.layout(0);
      result.remote_rows = rows - layout.send_count[r];
      for (cudaEvent_t event : {start, middle, stop}) CUDA_CHECK(cudaEventDestroy(event));
      CUDA_CHECK(cudaStreamDestroy(stream));
      return result;
    });
    for (int r = 0; r < P; ++r) {
      const Bandwidth& b = results[r];
      const double bytes = static_cast<double>(b.rows) * H * sizeof(bf16);
      const double remote = static_cast<double>(b.remote_rows) * H * sizeof(bf16);
      std::printf("[ exchange ] %-13s rank %d: %.1f MB per call (%.1f MB remote); to_experts %.3f ms = %.0f GB/s "
                  "(%.0f GB/s remote), from_experts %.3f ms = %.0f GB/s (%.0f GB/s remote)\n",
                  cuda::exchange_backend_name(backend), r, bytes / 1e6, remote / 1e6, b.to_ms,
                  bytes / (b.to_ms * 1e6), remote / (b.to_ms * 1e6), b.from_ms, bytes / (b.from_ms * 1e6),
                  remote / (b.from_ms * 1e6));
    }
  }
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
