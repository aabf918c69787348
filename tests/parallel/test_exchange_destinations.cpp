// Why: the NVLink expert exchange writes each row straight to exchange_destination_row's (owner, row) and reads the
// result back from there, so if that map reproduces the oracle (ep_reference) on the CPU, the GPU can only go wrong in
// moving bytes. Each case simulates the whole group: every rank's rows sorted by global expert (the engine's order),
// each row's destination, and demands ep_plan's receive order row by row on every owner, every receive row hit exactly
// once. Cases: uneven token counts, ranks without tokens, experts nobody picks, a rank whose experts receive nothing,
// one rank (the identity), and the errors exchange_layout raises.
#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "../test_util.h"
#include "ep_routing_util.h"
#include "parallel/exchange_destinations.h"

namespace moetune::parallel {
namespace {

using test_util::error_of;

using Case = testing::EpCase;
using testing::all_experts;

void check_against_oracle(const Case& c) {
  const int P = static_cast<int>(c.tokens.size()), E = c.experts, K = c.top_k, L = E / P;
  const testing::RoutedCase routed = testing::routed_case(c);
  const std::vector<EpRouting>& routing = routed.routing;
  const EpPlan& plan = routed.plan;
  const std::vector<testing::SortedRows>& sorted = routed.sorted;
  const std::vector<int32_t>& table = routed.table;
  const int64_t max_rows = 1 << 20;

  std::vector<std::vector<int>> hits(P);  // (P, recv rows) how often each owner row is written
  for (int d = 0; d < P; ++d) hits[d].assign(plan.recv[d].rows(), 0);
  for (int s = 0; s < P; ++s) {
    SCOPED_TRACE("source rank " + std::to_string(s));
    const std::vector<int32_t> base = exchange_destination_base(table, P, E, s, max_rows, max_rows);
    ASSERT_EQ(base.size(), static_cast<size_t>(E));
    const int32_t rows = static_cast<int32_t>(sorted[s].token.size());
    for (int32_t i = 0; i < rows; ++i) {
      int d = -1;
      const int32_t o = exchange_destination_row(sorted[s].offsets.data(), base.data(), E, L, i, &d);
      ASSERT_GE(d, 0);
      ASSERT_LT(d, P);
      ASSERT_GE(o, 0) << "row " << i;
      ASSERT_LT(o, plan.recv[d].rows()) << "row " << i;
      ++hits[d][o];
      EXPECT_EQ(plan.recv[d].src_rank[o], s) << "row " << i << " -> rank " << d << " row " << o;
      EXPECT_EQ(plan.recv[d].src_token[o], sorted[s].token[i]) << "row " << i << " -> rank " << d << " row " << o;
      EXPECT_EQ(plan.recv[d].src_slot[o], sorted[s].slot[i]) << "row " << i << " -> rank " << d << " row " << o;
    }
  }
  for (int d = 0; d < P; ++d)
    for (int o = 0; o < plan.recv[d].rows(); ++o) ASSERT_EQ(hits[d][o], 1) << "rank " << d << " row " << o;
}

TEST(ExchangeDestinations, UnevenTokensMatchTheOracle) {
  check_against_oracle({{37, 5, 64, 1}, 8, 2, all_experts(8), 11});
  check_against_oracle({{200, 150}, 16, 4, all_experts(16), 12});
}

TEST(ExchangeDestinations, RanksWithoutTokensAndEmptyExperts) {
  check_against_oracle({{0, 40, 0, 9}, 8, 2, {0, 3, 5, 6}, 21});  // experts 1, 2, 4, 7 receive nothing
  check_against_oracle({{0, 0}, 4, 2, all_experts(4), 22});        // nothing at all
  check_against_oracle({{60, 45}, 8, 3, {0, 2, 5, 7}, 23});        // empty experts between picked ones
}

TEST(ExchangeDestinations, RankWhoseExpertsReceiveNothing) {
  check_against_oracle({{30, 20}, 8, 2, {0, 1, 2, 3}, 31});         // rank 1 holds experts 4..7: nobody picks them
  check_against_oracle({{30, 20, 10, 5}, 8, 2, {2, 3, 4, 5}, 32});  // ranks 0 and 3 receive nothing
}

TEST(ExchangeDestinations, OneRankIsTheIdentity) {
  check_against_oracle({{50}, 8, 3, all_experts(8), 41});
  const std::vector<EpRouting> routing = testing::random_ep_routing({50}, 3, all_experts(8), 41);
  const testing::SortedRows sorted = testing::sort_by_expert(routing[0], 8, 3);
  const std::vector<int32_t> base = exchange_destination_base(sorted.offsets, 1, 8, 0, 150, 150);
  for (int32_t i = 0; i < 150; ++i) {
    int owner = -1;
    EXPECT_EQ(exchange_destination_row(sorted.offsets.data(), base.data(), 8, 8, i, &owner), i);
    EXPECT_EQ(owner, 0);
  }
}

TEST(ExchangeDestinations, RejectsWhatTheLayoutRejects) {
  // All 9 rows on rank 1's experts 2 and 3. Rank 1's expert-major rows: expert 2 from rank 0 (0..3), from rank 1 (4),
  // expert 3 from rank 0 (5, 6), from rank 1 (7, 8). So rank 0's expert 3 (its rows 4, 5) starts at 5 = 1 + 4, and
  // rank 1's expert 2 (row 0) at 4, its expert 3 (rows 1, 2) at 7 = 6 + 1.
  const std::vector<int32_t> table = {0, 0, 0, 4, 6, /**/ 0, 0, 0, 1, 3};
  EXPECT_EQ(exchange_destination_base(table, 2, 4, 0, 6, 9), (std::vector<int32_t>{0, 0, 0, 1}));
  EXPECT_EQ(exchange_destination_base(table, 2, 4, 1, 6, 9), (std::vector<int32_t>{0, 0, 4, 6}));
  EXPECT_NE(error_of([&] { exchange_destination_base(table, 2, 4, 0, 6, 8); }).find("rank 1 would receive 9 rows"),
            std::string::npos);
  const std::vector<int32_t> decreasing = {0, 2, 1, 4, 6, /**/ 0, 0, 0, 1, 3};
  EXPECT_NE(error_of([&] { exchange_destination_base(decreasing, 2, 4, 1, 6, 9); }).find("decrease at expert 1"),
            std::string::npos);
}

}  // namespace
}  // namespace moetune::parallel
