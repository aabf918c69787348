// Why: the NCCL expert exchange copies rows by the counts and segments of exchange_layout and nothing else, so if this
// arithmetic reproduces the oracle (ep_reference) on the CPU, the GPU can only go wrong in moving bytes. Each case
// simulates the whole group: every rank's rows sorted by global expert (the engine's order), the chunks each rank sends
// (contiguous runs of that buffer), the staging buffer (chunks by source), then the expert-major permute by
// exchange_staging_row, and demands ep_plan's receive order row by row, its expert offsets and its send counts; then
// the reverse permute must be the inverse. Cases: uneven token counts, ranks without tokens, experts nobody picks, a
// rank whose experts receive nothing, one rank. Also the errors (bad offsets, capacity, uneven split) and the ZeRO
// shard boundaries.
#include <gtest/gtest.h>

#include <numeric>
#include <set>
#include <vector>

#include "../test_util.h"
#include "ep_routing_util.h"
#include "parallel/exchange_layout.h"
#include "parallel/shard_layout.h"

namespace moetune::parallel {
namespace {

using test_util::error_of;

using Case = testing::EpCase;
using testing::all_experts;

void check_against_oracle(const Case& c) {
  const int P = static_cast<int>(c.tokens.size()), E = c.experts, K = c.top_k;
  const testing::RoutedCase routed = testing::routed_case(c);
  const std::vector<EpRouting>& routing = routed.routing;
  const EpPlan& plan = routed.plan;
  const std::vector<testing::SortedRows>& sorted = routed.sorted;
  const std::vector<int32_t>& table = routed.table;
  const int64_t max_rows = 1 << 20;

  std::vector<ExchangeLayout> layouts;
  for (int r = 0; r < P; ++r) layouts.push_back(exchange_layout(table, P, E, r, max_rows, max_rows));

  for (int d = 0; d < P; ++d) {
    const ExchangeLayout& x = layouts[d];
    SCOPED_TRACE("rank " + std::to_string(d));
    EXPECT_EQ(x.send_rows, static_cast<int32_t>(sorted[d].token.size()));
    for (int p = 0; p < P; ++p) {
      EXPECT_EQ(x.send_count[p], plan.send_counts[static_cast<size_t>(d) * P + p]) << "to rank " << p;
      EXPECT_EQ(x.recv_count[p], plan.send_counts[static_cast<size_t>(p) * P + d]) << "from rank " << p;
      EXPECT_EQ(x.recv_count[p], layouts[p].send_count[d]) << "both sides of " << p << " -> " << d;
    }
    EXPECT_EQ(x.local_offsets, plan.recv[d].expert_offsets);
    ASSERT_EQ(x.recv_rows, plan.recv[d].rows());

    // Staging: (source rank, sorted row on the source) of each row, chunks by source.
    std::vector<std::pair<int, int32_t>> staging;
    for (int s = 0; s < P; ++s) {
      EXPECT_EQ(x.recv_offset[s], static_cast<int32_t>(staging.size()));
      for (int32_t i = 0; i < layouts[s].send_count[d]; ++i) staging.emplace_back(s, layouts[s].send_offset[d] + i);
    }
    ASSERT_EQ(static_cast<int32_t>(staging.size()), x.recv_rows);

    std::set<int32_t> seen;
    for (int32_t o = 0; o < x.recv_rows; ++o) {
      const int32_t g = exchange_staging_row(x.segment_start.data(), x.segment_source.data(), x.segments(), o);
      ASSERT_GE(g, 0);
      ASSERT_LT(g, x.recv_rows);
      seen.insert(g);
      const auto [s, i] = staging[g];
      EXPECT_EQ(s, plan.recv[d].src_rank[o]) << "row " << o;
      EXPECT_EQ(sorted[s].token[i], plan.recv[d].src_token[o]) << "row " << o;
      EXPECT_EQ(sorted[s].slot[i], plan.recv[d].src_slot[o]) << "row " << o;
    }
    EXPECT_EQ(static_cast<int32_t>(seen.size()), x.recv_rows) << "the permute is not a bijection";
  }
}

TEST(ExchangeLayout, UnevenTokensMatchTheOracle) {
  check_against_oracle({{37, 5, 64, 1}, 8, 2, all_experts(8), 11});
  check_against_oracle({{200, 150}, 16, 4, all_experts(16), 12});
}

TEST(ExchangeLayout, RanksWithoutTokensAndEmptyExperts) {
  check_against_oracle({{0, 40, 0, 9}, 8, 2, {0, 3, 5, 6}, 21});  // experts 1, 2, 4, 7 receive nothing
  check_against_oracle({{0, 0}, 4, 2, all_experts(4), 22});        // nothing at all
}

TEST(ExchangeLayout, RankWhoseExpertsReceiveNothing) {
  check_against_oracle({{30, 20}, 8, 2, {0, 1, 2, 3}, 31});  // rank 1 holds experts 4..7: nobody picks them
  check_against_oracle({{30, 20, 10, 5}, 8, 2, {2, 3, 4, 5}, 32});  // ranks 0 and 3 receive nothing
}

TEST(ExchangeLayout, OneRankIsTheIdentity) {
  check_against_oracle({{50}, 8, 3, all_experts(8), 41});
  const std::vector<EpRouting> routing = testing::random_ep_routing({50}, 3, all_experts(8), 41);
  const testing::SortedRows sorted = testing::sort_by_expert(routing[0], 8, 3);
  const ExchangeLayout x = exchange_layout(sorted.offsets, 1, 8, 0, 150, 150);
  EXPECT_EQ(x.local_offsets, sorted.offsets);
  for (int32_t o = 0; o < x.recv_rows; ++o)
    EXPECT_EQ(exchange_staging_row(x.segment_start.data(), x.segment_source.data(), x.segments(), o), o);
}

TEST(ExchangeLayout, RejectsBadOffsetsAndOverflow) {
  // Two ranks, 4 experts: rank 0 has 6 rows, rank 1 has 3, all on experts 2 and 3 (rank 1's).
  const std::vector<int32_t> table = {0, 0, 0, 4, 6, /**/ 0, 0, 0, 1, 3};
  EXPECT_EQ(exchange_layout(table, 2, 4, 0, 6, 9).recv_rows, 0);
  EXPECT_EQ(exchange_layout(table, 2, 4, 1, 6, 9).recv_rows, 9);
  EXPECT_EQ(exchange_recv_rows(table, 2, 4), (std::vector<int64_t>{0, 9}));
  // Rank 0 checks rank 1's capacity too, so both fail together.
  EXPECT_NE(error_of([&] { exchange_layout(table, 2, 4, 0, 6, 8); }).find("rank 1 would receive 9 rows"),
            std::string::npos);
  EXPECT_NE(error_of([&] { exchange_layout(table, 2, 4, 1, 5, 9); }).find("rank 0 has 6 rows"), std::string::npos);
  const std::vector<int32_t> decreasing = {0, 2, 1, 4, 6, /**/ 0, 0, 0, 1, 3};
  EXPECT_NE(error_of([&] { exchange_layout(decreasing, 2, 4, 1, 6, 9); }).find("rank 0 offsets decrease at expert 1"),
            std::string::npos);
  const std::vector<int32_t> shifted = {0, 0, 0, 4, 6, /**/ 1, 1, 1, 1, 3};
  EXPECT_NE(error_of([&] { exchange_layout(shifted, 2, 4, 0, 6, 9); }).find("rank 1 offsets start at 1"),
            std::string::npos);
  EXPECT_NE(error_of([&] { exchange_layout({0, 0, 0, 0, 0, 0}, 2, 5, 0, 6, 9); }).find("do not split evenly"),
            std::string::npos);
}

TEST(ShardLayout, EqualAlignedShardsCoverTheArena) {
  const ShardLayout a = shard_layout(1000, 3);  // ceil(1000 / 3) = 334 -> 384
  EXPECT_EQ(a.shard, 384u);
  EXPECT_EQ(a.padded(), 1152u);
  EXPECT_EQ(a.begin(2), 768u);
  EXPECT_EQ(a.data_count(0), 384u);
  EXPECT_EQ(a.data_count(2), 1000u - 768u);
  const ShardLayout b = shard_layout(100, 4, 64);  // 25 -> 64: ranks 2 and 3 hold only padding
  EXPECT_EQ(b.shard, 64u);
  EXPECT_EQ(b.data_count(1), 36u);
  EXPECT_EQ(b.data_count(2), 0u);
  EXPECT_EQ(b.data_count(3), 0u);
  const ShardLayout c = shard_layout(4096, 2, 1);
  EXPECT_EQ(c.shard, 2048u);
  EXPECT_EQ(c.padded(), 4096u);
  EXPECT_EQ(shard_layout(0, 2).shard, 0u);
  EXPECT_NE(error_of([] { shard_layout(10, 0); }).find("0 ranks"), std::string::npos);
}

}  // namespace
}  // namespace moetune::parallel
