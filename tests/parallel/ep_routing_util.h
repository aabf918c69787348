// Why: the expert-exchange tests (CPU arithmetic in tests/parallel, NCCL on GPUs in tests/cuda) need the same routed
// inputs: random routings with uneven and empty ranks and experts, and each rank's rows sorted by global expert the way
// the engine's moe_build_routing sorts them (expert, then token, then slot), with their offsets.
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "parallel/ep_reference.h"

namespace moetune::testing {

// One randomised exchange: tokens per rank, E experts, top-k, the experts that may be picked, a seed.
struct EpCase {
  std::vector<int> tokens;  // per rank
  int experts, top_k;
  std::vector<int> pool;  // experts that may be picked
  uint32_t seed;
};

inline std::vector<int> all_experts(int experts) {
  std::vector<int> pool(experts);
  for (int e = 0; e < experts; ++e) pool[e] = e;
  return pool;
}

// tokens[s] tokens on rank s, each routed to top_k distinct experts drawn from `pool` (experts outside the pool
// receive nothing; the pool must hold at least top_k experts), weights in (0.05, 1).
inline std::vector<parallel::EpRouting> random_ep_routing(const std::vector<int>& tokens, int top_k,
                                                          const std::vector<int>& pool, uint32_t seed) {
  std::mt19937 generator(seed);
  std::uniform_real_distribution<float> weight(0.05f, 1.0f);
  std::vector<parallel::EpRouting> routing(tokens.size());
  for (size_t s = 0; s < tokens.size(); ++s) {
    routing[s].tokens = tokens[s];
    for (int t = 0; t < tokens[s]; ++t) {
      std::vector<int> choice = pool;
      std::shuffle(choice.begin(), choice.end(), generator);
      for (int j = 0; j < top_k; ++j) {
        routing[s].top_index.push_back(choice[j]);
        routing[s].top_weight.push_back(weight(generator));
      }
    }
  }
  return routing;
}

// One rank's rows sorted by global expert, then token, then slot (cuda::moe_build_routing's order).
struct SortedRows {
  std::vector<int32_t> offsets;  // (E + 1)
  std::vector<int32_t> token;    // (rows) token of each sorted row
  std::vector<int32_t> slot;     // (rows) its top-k slot
};

inline SortedRows sort_by_expert(const parallel::EpRouting& routing, int experts, int top_k) {
  SortedRows sorted;
  sorted.offsets.assign(experts + 1, 0);
  for (int32_t e : routing.top_index) ++sorted.offsets[e + 1];
  for (int e = 0; e < experts; ++e) sorted.offsets[e + 1] += sorted.offsets[e];
  for (int e = 0; e < experts; ++e)
    for (int t = 0; t < routing.tokens; ++t)
      for (int j = 0; j < top_k; ++j)
        if (routing.top_index[static_cast<size_t>(t) * top_k + j] == e) {
          sorted.token.push_back(t);
          sorted.slot.push_back(j);
        }
  return sorted;
}

// The (P, E + 1) table of every rank's offsets, as the exchange all-gathers it.
inline std::vector<int32_t> offsets_table(const std::vector<SortedRows>& sorted) {
  std::vector<int32_t> table;
  for (const SortedRows& s : sorted) table.insert(table.end(), s.offsets.begin(), s.offsets.end());
  return table;
}

// A case routed and planned: each rank's routing, the oracle's plan (contiguous experts), each rank's expert-sorted
// rows and the (P, E + 1) offsets table the exchange all-gathers.
struct RoutedCase {
  std::vector<parallel::EpRouting> routing;
  parallel::EpPlan plan;
  std::vector<SortedRows> sorted;
  std::vector<int32_t> table;
};

inline RoutedCase routed_case(const EpCase& c) {
  RoutedCase routed;
  const int P = static_cast<int>(c.tokens.size());
  routed.routing = random_ep_routing(c.tokens, c.top_k, c.pool, c.seed);
  routed.plan = parallel::ep_plan(routed.routing, parallel::ExpertMap::contiguous(c.experts, P), c.top_k);
  for (const parallel::EpRouting& r : routed.routing) routed.sorted.push_back(sort_by_expert(r, c.experts, c.top_k));
  routed.table = offsets_table(routed.sorted);
  return routed;
}

}  // namespace moetune::testing
