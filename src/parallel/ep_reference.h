// Why: expert parallelism moves every routed (token, expert) pair to the rank that holds the expert and back, twice per
// MoE layer. The GPU versions (an NCCL all-to-all, then a fused NVLink kernel in the style of DeepEP) are fast and
// hard to inspect; a row sent to the wrong rank, or placed in the wrong slot of the receive buffer, still yields
// plausible numbers. So this file is the plain, single-process model of what they must produce, for the whole EP group
// at once: the oracle their tests compare against exactly (fill tokens with their source rank and index, and a
// misrouted row names itself). Nothing here is fast; it is meant to be obviously right.
//
// Terms. An EP group of W ranks; rank s holds tokens x_s (T_s, H) routed by its own router to top_k experts each
// (top_index, top_weight (T_s, K), global expert ids). An ExpertMap says which rank holds each of the E experts and
// its index there (local expert). A "row" is one (source rank, token, slot) pair: a token routed to k experts is k rows,
// each processed by the expert of its slot.
//
// The order of rank d's receive buffer (the grouped-GEMM input there), fixed here so every implementation agrees:
//   by local expert (ascending, i.e. ascending global id among d's experts),
//     then by source rank (ascending),
//       then by token index on the source (ascending),
//         then by top-k slot (ascending; only matters if a token names one expert twice).
// With W = 1 this is exactly the permuted order of cpu::moe_build_routing (expert, then token), so EP degenerates to the
// single-GPU path. The send buffer of rank s (what an all-to-all sends) is ordered by destination rank, then the same
// (local expert, token, slot) order, so that each destination's chunk from s is already expert-sorted; the receiver's
// buffer is then a merge, by local expert, of the W chunks it received (per-chunk expert counts: recv.counts).
//
// Combine is the reverse: out_s[t] = sum over slots j (ascending) of top_weight[t, j] * y_d[row(t, j)], where d holds
// expert top_index[t, j] and y_d is d's expert output in receive order. Summed in fp32 in slot order, so an
// implementation that sums in the same order matches bit for bit.
#pragma once

#include <cstdint>
#include <vector>

namespace moetune::parallel {

// Which rank of the EP group holds each expert.
struct ExpertMap {
  int experts = 0, ranks = 0;
  std::vector<int32_t> owner;               // (E) rank holding expert e
  std::vector<int32_t> local_index;         // (E) e's position among its owner's experts
  std::vector<std::vector<int32_t>> owned;  // (W) each rank's experts, ascending global ids

  int local_experts(int rank) const { return static_cast<int>(owned[rank].size()); }

  // Contiguous blocks: rank r holds [r*E/W, (r+1)*E/W) (ParallelLayout's placement). E % W == 0 required.
  static ExpertMap contiguous(int experts, int ranks);
  // Any placement: owner[e] in [0, ranks). A rank may hold no expert.
  static ExpertMap from_owner(std::vector<int32_t> owner, int ranks);
};

// One rank's routing, as its router produced it.
struct EpRouting {
  int tokens = 0;
  std::vector<int32_t> top_index;  // (tokens, K) global expert ids
  std::vector<float> top_weight;   // (tokens, K)
};

// What rank s sends and where each of its rows lands (DeepEP's "handle": combine needs it to bring results home).
struct EpSendPlan {
  std::vector<int32_t> dest_offsets;  // (W + 1) send-buffer rows for rank d: [dest_offsets[d], dest_offsets[d+1])
  std::vector<int32_t> send_token;    // (rows) token of each send-buffer row (order: see the file comment)
  std::vector<int32_t> send_slot;     // (rows) its top-k slot
  std::vector<int32_t> dest_rank;     // (tokens, K) rank computing token t's slot j
  std::vector<int32_t> dest_row;      // (tokens, K) that row's index in dest_rank's receive buffer
  std::vector<int32_t> tokens_to_rank;  // (W) distinct tokens with at least one row for rank d (what a dispatch that
                                        // sends each token once per rank moves, as DeepEP does)
};

// What rank d receives, in receive order.
struct EpRecvLayout {
  std::vector<int32_t> expert_offsets;  // (L + 1) rows of local expert l: [expert_offsets[l], expert_offsets[l+1])
  std::vector<int32_t> counts;          // (L, W) rows of local expert l from source rank s, at [l * W + s]
  std::vector<int32_t> src_rank;        // (rows) the row's source rank
  std::vector<int32_t> src_token;       // (rows) its token index there
  std::vector<int32_t> src_slot;        // (rows) its top-k slot
  std::vector<float> weight;            // (rows) its routing weight (the expert side needs it for d_top_weight)
  int rows() const { return static_cast<int>(src_rank.size()); }
};

// Everything the exchange needs, computed from routing alone (no activations): DeepEP's "layout" step.
struct EpPlan {
  int ranks = 0, top_k = 0;
  std::vector<int64_t> send_counts;        // (W, W) rows rank s sends to rank d, at [s * W + d] (diagonal: kept local)
  std::vector<int64_t> send_token_counts;  // (W, W) distinct tokens rank s sends to rank d
  std::vector<int64_t> expert_counts;      // (E) rows each global expert receives, over the whole group
  std::vector<EpSendPlan> send;            // (W) per source rank
  std::vector<EpRecvLayout> recv;          // (W) per destination rank
};

// The plan of one exchange. routing.size() == map.ranks. Throws moetune::Error naming rank, token and slot for an
// expert id outside [0, E), and naming the rank for routing tensors of the wrong size.
EpPlan ep_plan(const std::vector<EpRouting>& routing, const ExpertMap& map, int top_k);

// Dispatch: for each rank d, its receive buffer (rows, H): row r = x_{src_rank[r]}[src_token[r]].
// x[s] is rank s's (T_s, H).
std::vector<std::vector<float>> ep_dispatch(const EpPlan& plan, const std::vector<std::vector<float>>& x, int hidden);

// The send buffer of rank s (rows, H), ordered as plan.send[s] says; an all-to-all of these, chunk [dest_offsets[d],
// dest_offsets[d+1]) to rank d, then ep_recv_from_chunks on each receiver, equals ep_dispatch.
std::vector<float> ep_pack_send(const EpPlan& plan, int rank, const std::vector<float>& x, int hidden);

// The receive buffer of rank d from the chunks it received, chunks[s] = rank s's chunk for d (counts rows of each
// local expert, expert-sorted, as ep_pack_send orders them): the merge by local expert, then source rank.
std::vector<float> ep_recv_from_chunks(const EpPlan& plan, int rank, const std::vector<std::vector<float>>& chunks,
                                       int hidden);

// Combine: for each source rank s, out_s (T_s, H) = sum over slots j of top_weight[t, j] * y_{dest}[row(t, j)], slots
// in ascending order, in fp32. y[d] is rank d's expert output in receive order, (recv[d].rows(), H).
std::vector<std::vector<float>> ep_combine(const EpPlan& plan, const std::vector<EpRouting>& routing,
                                           const std::vector<std::vector<float>>& y, int hidden);

}  // namespace moetune::parallel
