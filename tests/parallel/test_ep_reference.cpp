// Why: the reference dispatch/combine is the oracle of the GPU all-to-all, so it must itself be checked against its
// written definition, not against plausible numbers. Token rows carry their identity (source rank, token index), so a
// row in the wrong place names itself; the documented receive order is checked row by row, on a hand-worked example
// and on random routings with uneven token counts, ranks without tokens, experts nobody picks, a rank holding no
// expert and a non-contiguous placement; the counts are checked against brute-force counting; the all-to-all path
// (pack, exchange chunks, merge) must equal the direct dispatch; combine(dispatch(x)) with identity experts must be
// exactly sum_k w_k x; and with real SwiGLU experts, expert parallelism must reproduce the single-rank MoE of
// ops/cpu/moe_experts (1e-5: the two sum a token's experts in different orders).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>
#include <tuple>
#include <vector>

#include "../test_util.h"
#include "ops/cpu/moe_experts.h"
#include "parallel/ep_reference.h"
#include "ep_routing_util.h"

namespace moetune::parallel {
namespace {

using moetune::testing::random_ep_routing;
using test_util::error_of;
using Rows = std::vector<std::vector<float>>;

// Row (s, t) of rank s's tokens: [s, t, 1000 s + t, h...] so every value identifies the row.
Rows identity_tokens(const std::vector<EpRouting>& routing, int hidden) {
  Rows x(routing.size());
  for (size_t s = 0; s < routing.size(); ++s) {
    x[s].resize(static_cast<size_t>(routing[s].tokens) * hidden);
    for (int t = 0; t < routing[s].tokens; ++t)
      for (int h = 0; h < hidden; ++h) {
        const float value = h == 0 ? static_cast<float>(s) : h == 1 ? static_cast<float>(t)
                                                      : h == 2 ? static_cast<float>(1000 * s + t)
                                                               : static_cast<float>(h);
        x[s][static_cast<size_t>(t) * hidden + h] = value;
      }
  }
  return x;
}


// Checks a plan against its definition (ep_reference.h) by brute force.
void check_plan(const EpPlan& plan, const std::vector<EpRouting>& routing, const ExpertMap& map, int top_k) {
  const int W = map.ranks;
  ASSERT_EQ(plan.ranks, W);
  // Every (source, token, slot) row lands exactly once, on the owner of its expert, at the place dest_row says.
  std::set<std::tuple<int, int, int>> seen;
  for (int d = 0; d < W; ++d) {
    const EpRecvLayout& recv = plan.recv[d];
    const int L = map.local_experts(d);
    ASSERT_EQ(static_cast<int>(recv.expert_offsets.size()), L + 1);
    EXPECT_EQ(recv.expert_offsets[0], 0);
    EXPECT_EQ(recv.expert_offsets[L], recv.rows());
    std::tuple<int, int, int, int> previous{-1, -1, -1, -1};
    for (int l = 0; l < L; ++l)
      for (int r = recv.expert_offsets[l]; r < recv.expert_offsets[l + 1]; ++r) {
        const int s = recv.src_rank[r], t = recv.src_token[r], j = recv.src_slot[r];
        ASSERT_TRUE(s >= 0 && s < W && t >= 0 && t < routing[s].tokens && j >= 0 && j < top_k) << "rank " << d << " row " << r;
        const size_t pair = static_cast<size_t>(t) * top_k + j;
        EXPECT_EQ(routing[s].top_index[pair], map.owned[d][l]) << "rank " << d << " row " << r << " is in the wrong expert";
        EXPECT_EQ(recv.weight[r], routing[s].top_weight[pair]);
        EXPECT_EQ(plan.send[s].dest_rank[pair], d);
        EXPECT_EQ(plan.send[s].dest_row[pair], r);
        EXPECT_TRUE(seen.insert({s, t, j}).second) << "row received twice";
        // Receive order: local expert, source rank, token, slot, strictly ascending.
        const std::tuple<int, int, int, int> key{l, s, t, j};
        EXPECT_LT(previous, key) << "rank " << d << " row " << r << " out of order";
        previous = key;
      }
  }
  size_t pairs = 0;
  for (const EpRouting& r : routing) pairs += static_cast<size_t>(r.tokens) * top_k;
  EXPECT_EQ(seen.size(), pairs);

  // Counts, by brute force.
  std::vector<int64_t> send(static_cast<size_t>(W) * W, 0), send_tokens(static_cast<size_t>(W) * W, 0),
      per_expert(map.experts, 0);
  for (int s = 0; s < W; ++s)
    for (int t = 0; t < routing[s].tokens; ++t) {
      std::set<int> dests;
      for (int j = 0; j < top_k; ++j) {
        const int e = routing[s].top_index[static_cast<size_t>(t) * top_k + j];
        ++send[static_cast<size_t>(s) * W + map.owner[e]];
        ++per_expert[e];
        dests.insert(map.owner[e]);
      }
      for (const int d : dests) ++send_tokens[static_cast<size_t>(s) * W + d];
    }
  EXPECT_EQ(plan.send_counts, send);
  EXPECT_EQ(plan.send_token_counts, send_tokens);
  EXPECT_EQ(plan.expert_counts, per_expert);
  for (int s = 0; s < W; ++s) {
    int64_t row_sum = 0;
    for (int d = 0; d < W; ++d) {
      row_sum += plan.send_counts[static_cast<size_t>(s) * W + d];
      EXPECT_EQ(plan.send[s].tokens_to_rank[d], plan.send_token_counts[static_cast<size_t>(s) * W + d]);
      EXPECT_EQ(plan.send[s].dest_offsets[d + 1] - plan.send[s].dest_offsets[d], plan.send_counts[static_cast<size_t>(s) * W + d]);
    }
    EXPECT_EQ(row_sum, static_cast<int64_t>(routing[s].tokens) * top_k) << "rank " << s << " sends every row once";
  }
  for (int d = 0; d < W; ++d) {
    const EpRecvLayout& recv = plan.recv[d];
    int64_t column_sum = 0;
    for (int s = 0; s < W; ++s) {
      column_sum += plan.send_counts[static_cast<size_t>(s) * W + d];
      int64_t from_s = 0;
      for (int l = 0; l < map.local_experts(d); ++l) from_s += recv.counts[static_cast<size_t>(l) * W + s];
      EXPECT_EQ(from_s, plan.send_counts[static_cast<size_t>(s) * W + d]);
    }
    EXPECT_EQ(column_sum, recv.rows()) << "rank " << d << " receives what the others send it";
    for (int l = 0; l < map.local_experts(d); ++l) {
      int64_t of_l = 0;
      for (int s = 0; s < W; ++s) of_l += recv.counts[static_cast<size_t>(l) * W + s];
      EXPECT_EQ(of_l, recv.expert_offsets[l + 1] - recv.expert_offsets[l]);
      EXPECT_EQ(of_l, plan.expert_counts[map.owned[d][l]]);
    }
  }
  // Send buffer order: by destination, then local expert, then token, then slot.
  for (int s = 0; s < W; ++s) {
    const EpSendPlan& sp = plan.send[s];
    for (int d = 0; d < W; ++d) {
      std::tuple<int, int, int> previous{-1, -1, -1};
      for (int i = sp.dest_offsets[d]; i < sp.dest_offsets[d + 1]; ++i) {
        const size_t pair = static_cast<size_t>(sp.send_token[i]) * top_k + sp.send_slot[i];
        const int e = routing[s].top_index[pair];
        EXPECT_EQ(map.owner[e], d);
        const std::tuple<int, int, int> key{map.local_index[e], sp.send_token[i], sp.send_slot[i]};
        EXPECT_LT(previous, key) << "send buffer of rank " << s << " row " << i << " out of order";
        previous = key;
      }
    }
  }
}

// Every received row holds the token it claims to come from.
void check_dispatched(const EpPlan& plan, const Rows& received, const Rows& x, int hidden) {
  for (int d = 0; d < plan.ranks; ++d) {
    const EpRecvLayout& recv = plan.recv[d];
    ASSERT_EQ(received[d].size(), static_cast<size_t>(recv.rows()) * hidden);
    for (int r = 0; r < recv.rows(); ++r) {
      const float* row = &received[d][static_cast<size_t>(r) * hidden];
      EXPECT_EQ(row[0], static_cast<float>(recv.src_rank[r])) << "rank " << d << " row " << r;
      EXPECT_EQ(row[1], static_cast<float>(recv.src_token[r])) << "rank " << d << " row " << r;
      for (int h = 0; h < hidden; ++h)
        EXPECT_EQ(row[h], x[recv.src_rank[r]][static_cast<size_t>(recv.src_token[r]) * hidden + h]);
    }
  }
}

// The all-to-all path: each source packs, chunk [dest_offsets[d], dest_offsets[d+1]) goes to d, d merges.
Rows through_all_to_all(const EpPlan& plan, const Rows& x, int hidden) {
  const int W = plan.ranks;
  std::vector<std::vector<float>> packed(W);
  for (int s = 0; s < W; ++s) packed[s] = ep_pack_send(plan, s, x[s], hidden);
  Rows received(W);
  for (int d = 0; d < W; ++d) {
    Rows chunks(W);
    for (int s = 0; s < W; ++s)
      chunks[s].assign(packed[s].begin() + static_cast<long>(plan.send[s].dest_offsets[d]) * hidden,
                       packed[s].begin() + static_cast<long>(plan.send[s].dest_offsets[d + 1]) * hidden);
    received[d] = ep_recv_from_chunks(plan, d, chunks, hidden);
  }
  return received;
}

// combine(dispatch(x)) with identity experts: out_s[t] = sum_j w[t, j] x_s[t], summed in slot order as documented.
void check_identity_round_trip(const EpPlan& plan, const std::vector<EpRouting>& routing, const Rows& x, int hidden) {
  const Rows out = ep_combine(plan, routing, ep_dispatch(plan, x, hidden), hidden);
  for (int s = 0; s < plan.ranks; ++s) {
    ASSERT_EQ(out[s].size(), x[s].size());
    for (int t = 0; t < routing[s].tokens; ++t)
      for (int h = 0; h < hidden; ++h) {
        float expected = 0.0f;
        for (int j = 0; j < plan.top_k; ++j)
          expected += routing[s].top_weight[static_cast<size_t>(t) * plan.top_k + j] * x[s][static_cast<size_t>(t) * hidden + h];
        EXPECT_EQ(out[s][static_cast<size_t>(t) * hidden + h], expected) << "rank " << s << " token " << t << " h " << h;
      }
  }
}

void check_everything(const std::vector<EpRouting>& routing, const ExpertMap& map, int top_k, int hidden) {
  const EpPlan plan = ep_plan(routing, map, top_k);
  check_plan(plan, routing, map, top_k);
  const Rows x = identity_tokens(routing, hidden);
  const Rows received = ep_dispatch(plan, x, hidden);
  check_dispatched(plan, received, x, hidden);
  EXPECT_EQ(through_all_to_all(plan, x, hidden), received);
  check_identity_round_trip(plan, routing, x, hidden);
}

// --- a hand-worked exchange -------------------------------------------------------------------------------------------

// 2 ranks, 4 experts (rank 0: experts 0, 1; rank 1: experts 2, 3), top-2.
//   rank 0: token 0 -> {3, 0}, token 1 -> {1, 2}, token 2 -> {0, 1}
//   rank 1: token 0 -> {0, 3}, token 1 -> {2, 0}
// Rank 0 receives, expert 0: (r0 t0 j1) (r0 t2 j0) (r1 t0 j0) (r1 t1 j1); expert 1: (r0 t1 j0) (r0 t2 j1).
// Rank 1 receives, expert 2: (r0 t1 j1) (r1 t1 j0); expert 3: (r0 t0 j0) (r1 t0 j1).
TEST(EpReference, HandWorkedExample) {
  const ExpertMap map = ExpertMap::contiguous(4, 2);
  std::vector<EpRouting> routing(2);
  routing[0] = {3, {3, 0, 1, 2, 0, 1}, {0.5f, 0.25f, 0.75f, 0.125f, 1.0f, 2.0f}};
  routing[1] = {2, {0, 3, 2, 0}, {0.5f, 0.5f, 4.0f, 8.0f}};
  const EpPlan plan = ep_plan(routing, map, 2);

  EXPECT_EQ(plan.recv[0].expert_offsets, (std::vector<int32_t>{0, 4, 6}));
  EXPECT_EQ(plan.recv[0].src_rank, (std::vector<int32_t>{0, 0, 1, 1, 0, 0}));
  EXPECT_EQ(plan.recv[0].src_token, (std::vector<int32_t>{0, 2, 0, 1, 1, 2}));
  EXPECT_EQ(plan.recv[0].src_slot, (std::vector<int32_t>{1, 0, 0, 1, 0, 1}));
  EXPECT_EQ(plan.recv[0].weight, (std::vector<float>{0.25f, 1.0f, 0.5f, 8.0f, 0.75f, 2.0f}));
  EXPECT_EQ(plan.recv[0].counts, (std::vector<int32_t>{2, 2, 2, 0}));  // (expert 0: from r0, r1), (expert 1: ...)
  EXPECT_EQ(plan.recv[1].expert_offsets, (std::vector<int32_t>{0, 2, 4}));
  EXPECT_EQ(plan.recv[1].src_rank, (std::vector<int32_t>{0, 1, 0, 1}));
  EXPECT_EQ(plan.recv[1].src_token, (std::vector<int32_t>{1, 1, 0, 0}));
  EXPECT_EQ(plan.recv[1].src_slot, (std::vector<int32_t>{1, 0, 0, 1}));
  EXPECT_EQ(plan.recv[1].counts, (std::vector<int32_t>{1, 1, 1, 1}));

  EXPECT_EQ(plan.send_counts, (std::vector<int64_t>{4, 2, 2, 2}));        // [s * W + d]
  EXPECT_EQ(plan.send_token_counts, (std::vector<int64_t>{3, 2, 2, 2}));  // rank 0 token 2 goes to rank 0 once
  EXPECT_EQ(plan.expert_counts, (std::vector<int64_t>{4, 2, 2, 2}));
  // Rank 0's send buffer: to rank 0 (expert 0: t0j1 t2j0; expert 1: t1j0 t2j1), to rank 1 (expert 2: t1j1; 3: t0j0).
  EXPECT_EQ(plan.send[0].dest_offsets, (std::vector<int32_t>{0, 4, 6}));
  EXPECT_EQ(plan.send[0].send_token, (std::vector<int32_t>{0, 2, 1, 2, 1, 0}));
  EXPECT_EQ(plan.send[0].send_slot, (std::vector<int32_t>{1, 0, 0, 1, 1, 0}));
  EXPECT_EQ(plan.send[0].dest_rank, (std::vector<int32_t>{1, 0, 0, 1, 0, 0}));
  EXPECT_EQ(plan.send[0].dest_row, (std::vector<int32_t>{2, 0, 4, 0, 1, 5}));
  check_everything(routing, map, 2, 5);
}

// --- random routings --------------------------------------------------------------------------------------------------

TEST(EpReference, UnevenTokensAndEmptyExperts) {
  // 4 ranks x 4 experts; rank 1 has no tokens; experts 5 and 12 are never picked.
  std::vector<int> pool;
  for (int e = 0; e < 16; ++e)
    if (e != 5 && e != 12) pool.push_back(e);
  const std::vector<EpRouting> routing = random_ep_routing({7, 0, 13, 3}, 2, pool, 1);
  const ExpertMap map = ExpertMap::contiguous(16, 4);
  check_everything(routing, map, 2, 4);
  const EpPlan plan = ep_plan(routing, map, 2);
  EXPECT_EQ(plan.expert_counts[5], 0);
  EXPECT_EQ(plan.recv[1].expert_offsets[2], plan.recv[1].expert_offsets[1]);  // expert 5 = rank 1's local 1: empty
  for (int d = 0; d < 4; ++d) EXPECT_EQ(plan.send_counts[1 * 4 + d], 0);
}

TEST(EpReference, ManySeedsAndShapes) {
  struct Case {
    std::vector<int> tokens;
    int experts, top_k;
  };
  for (const Case& c : {Case{{5}, 4, 2}, Case{{3, 9}, 8, 1}, Case{{16, 16, 16, 16}, 8, 2}, Case{{1, 2, 3, 4, 5, 6, 7, 8}, 16, 4},
                        Case{{0, 0, 0}, 6, 2}, Case{{31, 1, 17}, 12, 8}}) {
    const int W = static_cast<int>(c.tokens.size());
    std::vector<int> pool(c.experts);
    std::iota(pool.begin(), pool.end(), 0);
    for (uint32_t seed = 0; seed < 5; ++seed) {
      SCOPED_TRACE(::testing::Message() << "ranks " << W << " experts " << c.experts << " top_k " << c.top_k << " seed " << seed);
      check_everything(random_ep_routing(c.tokens, c.top_k, pool, seed), ExpertMap::contiguous(c.experts, W), c.top_k, 3);
    }
  }
}

TEST(EpReference, AnyPlacement) {
  // Round robin, and a rank (3) holding no expert at all.
  const ExpertMap round_robin = ExpertMap::from_owner({0, 1, 2, 3, 0, 1, 2, 3}, 4);
  EXPECT_EQ(round_robin.owned[1], (std::vector<int32_t>{1, 5}));
  EXPECT_EQ(round_robin.local_index[5], 1);
  const ExpertMap lopsided = ExpertMap::from_owner({2, 0, 0, 1, 2, 0}, 4);
  EXPECT_EQ(lopsided.local_experts(3), 0);
  std::vector<int> pool8(8), pool6(6);
  std::iota(pool8.begin(), pool8.end(), 0);
  std::iota(pool6.begin(), pool6.end(), 0);
  for (uint32_t seed = 0; seed < 3; ++seed) {
    check_everything(random_ep_routing({6, 2, 9, 4}, 3, pool8, 10 + seed), round_robin, 3, 3);
    check_everything(random_ep_routing({6, 2, 9, 4}, 2, pool6, 20 + seed), lopsided, 2, 3);
    EXPECT_EQ(ep_plan(random_ep_routing({6, 2, 9, 4}, 2, pool6, 20 + seed), lopsided, 2).recv[3].rows(), 0);
  }
}

// One rank: the receive buffer is cpu::moe_build_routing's permuted order, so EP degenerates to the one-GPU path.
TEST(EpReference, OneRankIsTheSingleGpuOrder) {
  std::vector<int> pool(6);
  std::iota(pool.begin(), pool.end(), 0);
  const std::vector<EpRouting> routing = random_ep_routing({11}, 2, pool, 7);
  const EpPlan plan = ep_plan(routing, ExpertMap::contiguous(6, 1), 2);
  const cpu::MoeShape shape{11, 1, 6, 1, 2};
  std::vector<int32_t> offsets(7), row_token(22), row_slot(22);
  cpu::MoeRouting single{offsets.data(), row_token.data(), row_slot.data()};
  cpu::moe_build_routing(single, routing[0].top_index.data(), shape);
  EXPECT_EQ(plan.recv[0].expert_offsets, offsets);
  EXPECT_EQ(plan.recv[0].src_token, row_token);
  EXPECT_EQ(plan.recv[0].src_slot, row_slot);
}

// --- with real experts ------------------------------------------------------------------------------------------------

// Expert parallelism over 4 ranks (each running the SwiGLU experts it holds on its receive buffer) equals each rank
// running every expert on its own tokens.
TEST(EpReference, MatchesSingleRankMoe) {
  const int W = 4, E = 8, H = 6, I = 5, K = 2;
  const std::vector<int> tokens = {9, 4, 0, 12};
  std::vector<int> pool(E);
  std::iota(pool.begin(), pool.end(), 0);
  const std::vector<EpRouting> routing = random_ep_routing(tokens, K, pool, 3);
  std::mt19937 gen(5);
  std::uniform_real_distribution<float> uniform(-0.5f, 0.5f);
  std::vector<float> w_gate_up(static_cast<size_t>(E) * 2 * I * H), w_down(static_cast<size_t>(E) * H * I);
  for (float& v : w_gate_up) v = uniform(gen);
  for (float& v : w_down) v = uniform(gen);
  Rows x(W);
  for (int s = 0; s < W; ++s) {
    x[s].resize(static_cast<size_t>(tokens[s]) * H);
    for (float& v : x[s]) v = uniform(gen);
  }

  // Runs experts [first, first + count) over `rows` rows (rows of local expert l at offsets[l]), weight 1 each.
  const auto run_experts = [&](const std::vector<float>& in, int rows, const std::vector<int32_t>& top_index,
                               const std::vector<float>& top_weight, int first, int count, int top_k) {
    const cpu::MoeShape shape{rows, H, count, I, top_k};
    const long R = shape.rows();
    std::vector<int32_t> offsets(count + 1), row_token(R), row_slot(R);
    cpu::MoeRouting r{offsets.data(), row_token.data(), row_slot.data()};
    cpu::moe_build_routing(r, top_index.data(), shape);
    std::vector<float> gathered(R * H), gate_up(R * 2 * I), act(R * I), expert_out(R * H), out(static_cast<size_t>(rows) * H);
    cpu::MoeSaved saved{gathered.data(), gate_up.data(), act.data(), expert_out.data()};
    cpu::moe_experts_forward(out.data(), saved, in.data(), top_weight.data(), r, w_gate_up.data() + static_cast<size_t>(first) * 2 * I * H,
                             w_down.data() + static_cast<size_t>(first) * H * I, shape);
    return out;
  };

  const ExpertMap map = ExpertMap::contiguous(E, W);
  const EpPlan plan = ep_plan(routing, map, K);
  const Rows received = ep_dispatch(plan, x, H);
  Rows y(W);
  for (int d = 0; d < W; ++d) {
    const EpRecvLayout& recv = plan.recv[d];
    std::vector<int32_t> local(recv.rows());
    for (int l = 0; l + 1 < static_cast<int>(recv.expert_offsets.size()); ++l)
      for (int r = recv.expert_offsets[l]; r < recv.expert_offsets[l + 1]; ++r) local[r] = l;
    y[d] = run_experts(received[d], recv.rows(), local, std::vector<float>(recv.rows(), 1.0f), map.owned[d][0],
                       map.local_experts(d), 1);
  }
  const Rows out = ep_combine(plan, routing, y, H);
  for (int s = 0; s < W; ++s) {
    const std::vector<float> expected =
        run_experts(x[s], tokens[s], routing[s].top_index, routing[s].top_weight, 0, E, K);
    ASSERT_EQ(out[s].size(), expected.size());
    for (size_t i = 0; i < expected.size(); ++i) EXPECT_NEAR(out[s][i], expected[i], 1e-5) << "rank " << s << " value " << i;
  }
}

// --- errors -----------------------------------------------------------------------------------------------------------

TEST(EpReference, Errors) {
  const ExpertMap map = ExpertMap::contiguous(4, 2);
  std::vector<EpRouting> routing(2);
  routing[0] = {2, {0, 1, 2, 4}, {1, 1, 1, 1}};
  routing[1] = {0, {}, {}};
  std::string error = error_of([&] { ep_plan(routing, map, 2); });
  EXPECT_NE(error.find("rank 0 token 1 slot 1 routes to expert 4 of 4"), std::string::npos) << error;
  routing[0].top_index = {0, 1, 2};
  error = error_of([&] { ep_plan(routing, map, 2); });
  EXPECT_NE(error.find("rank 0 has 2 tokens"), std::string::npos) << error;
  routing.pop_back();
  EXPECT_FALSE(error_of([&] { ep_plan(routing, map, 2); }).empty());
  EXPECT_FALSE(error_of([] { ExpertMap::contiguous(6, 4); }).empty());
  EXPECT_FALSE(error_of([] { ExpertMap::from_owner({0, 2}, 2); }).empty());

  routing = {EpRouting{1, {0, 3}, {1, 1}}, EpRouting{1, {1, 2}, {1, 1}}};
  const EpPlan plan = ep_plan(routing, map, 2);
  error = error_of([&] { ep_dispatch(plan, Rows{std::vector<float>(4), std::vector<float>(3)}, 4); });
  EXPECT_NE(error.find("rank 1 holds 3 values"), std::string::npos) << error;
}

}  // namespace
}  // namespace moetune::parallel
