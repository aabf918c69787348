// Why: expert parallelism (EP) puts each routed expert on one rank of the EP group, so every MoE layer must move each
// routed row to the rank holding its expert and bring the result back, forward and backward. This is the first,
// NCCL-collective version of that exchange (a fused NVLink version is a later step, behind the same calls): a count
// exchange, then one ncclSend/ncclRecv per peer, then a gather that puts the received rows in local-expert order.
//
// How it plugs into the GPU engine's MoE layer (gpu/gpu_layers.cpp), P ranks, E global experts, L = E / P local:
//   moe_build_routing -> offsets (E + 1), rows sorted by GLOBAL expert; moe_gather -> gathered (N*k, H)    [as today]
//   exchange.plan(layer, offsets, stream)                       counts of every rank; one host synchronisation
//   exchange.to_experts(layer, gathered, expert_in, H, ...)     expert_in (recv_rows(layer), H), local-expert-major
//   grouped GEMMs over L local experts with local_offsets(layer) (device, L + 1) and recv_rows(layer) rows
//   exchange.from_experts(layer, expert_out, rows_out, H, ...)  rows_out (N*k, H) in the ORIGINAL sorted positions
//   moe_combine_forward(out, rows_out, top_weight, token_slot_row, ...)                                    [as today]
// Backward, with the same plan (that is why plans are kept per slot, one slot per MoE layer):
//   moe_combine_backward -> d_rows (N*k, H); to_experts(layer, d_rows, d_expert_out, H, ...); grouped GEMMs backward;
//   from_experts(layer, d_expert_in, d_gathered, H, ...); moe_scatter_add_backward as today.
// d_top_weight stays on the source rank: it needs expert_out rows in source order, which from_experts returned there.
//
// Orders (parallel/exchange_layout.h, checked against parallel/ep_reference.h): rank r owns experts [r*L, (r+1)*L);
// the rows rank s sends to rank d are the contiguous run of its sorted buffer for d's experts; rank d's expert-side
// rows are ordered by local expert, then source rank, then the source's (token, slot) order: ep_reference's receive
// order. With P = 1 both calls are copies and local_offsets == offsets.
//
// Memory. The object allocates, once, at construction: an all-gather table (P, E + 1) int32 and its pinned host copy,
// and per slot a small device table ((2*L*P + 1) + (L + 1) int32) and its pinned upload buffer. The caller owns the
// row buffers and the staging workspace (staging_elements() bf16; one is enough for all slots and both directions,
// since each call uses it only until its rows are delivered) — so the engine can carve them from its arenas.
// Worst case: a rank's experts receive every row of every rank, recv_rows <= P * max_rows; expert-side buffers and
// staging are sized from max_recv_rows (default that worst case; a smaller capacity is a bet on load balance, and
// plan() fails on every rank together when any rank would exceed it).
//
// Streams: every call of one ExpertExchange must be enqueued on the same stream (the pinned buffers are reused after
// the synchronisation in plan()). The communicator is held by reference: it must outlive the exchange, stay where it
// is (not be moved from), and not be used by another stream while a call is in flight.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "ops/cuda/cuda_check.h"
#include "ops/cuda/device_buffer.h"
#include "parallel/exchange_layout.h"
#include "parallel/nccl_comm.h"

namespace moetune::cuda {

struct ExpertExchangeShape {
  int experts = 0;          // E, global routed experts per MoE layer (E % P == 0)
  int64_t max_rows = 0;     // the most rows (tokens * top_k) one rank passes to plan()
  int max_width = 0;        // the widest row moved, in elements (the hidden size)
  int slots = 1;            // plans kept at once (one per MoE layer)
  int64_t max_recv_rows = 0;  // rows one rank's experts can take; 0: the worst case, P * max_rows
};

class ExpertExchange {
 public:
  // `ep`: the EP group's communicator (NcclComm::split / ep_dp_comms); its rank r owns experts [r*L, (r+1)*L).
  ExpertExchange(const parallel::NcclComm& ep, const ExpertExchangeShape& shape);

  static int64_t worst_case_recv_rows(int ranks, int64_t max_rows) { return ranks * max_rows; }
  int64_t max_recv_rows() const { return max_recv_rows_; }
  // The staging workspace every to_experts / from_experts call takes: max_recv_rows * max_width bf16.
  size_t staging_elements() const { return static_cast<size_t>(max_recv_rows_) * shape_.max_width; }
  int local_experts() const { return local_experts_; }

  // Records slot's exchange from this rank's offsets (E + 1, device int32, global-expert-sorted rows; the engine's
  // moe_build_routing output) and every other rank's (an all-gather of the offsets). Collective over the EP group;
  // synchronises `stream` once. Throws moetune::Error (on every rank alike) for inconsistent offsets, more than
  // max_rows rows on a rank, or more than max_recv_rows rows for any rank's experts.
  void plan(int slot, const int32_t* offsets, cudaStream_t stream);

  const parallel::ExchangeLayout& layout(int slot) const;  // the host-side plan (counts, offsets)
  int32_t recv_rows(int slot) const { return layout(slot).recv_rows; }
  // (L + 1) device int32: local expert l's rows in expert-major order [local_offsets[l], local_offsets[l+1]).
  const int32_t* local_offsets(int slot) const;

  // Dispatch. rows (layout.send_rows, width): this rank's rows in global-expert order. expert_rows (recv_rows, width),
  // overwritten: the rows of this rank's experts from every rank, local-expert-major. staging (staging_elements()).
  // 1 <= width <= max_width. Collective over the EP group.
  void to_experts(int slot, const bf16* rows, bf16* expert_rows, int width, bf16* staging, cudaStream_t stream);

  // Return, the exact reverse: expert_rows (recv_rows, width) in local-expert-major order; rows (layout.send_rows,
  // width), overwritten: row i holds what the expert side computed for this rank's sorted row i.
  void from_experts(int slot, const bf16* expert_rows, bf16* rows, int width, bf16* staging, cudaStream_t stream);

 private:
  struct PinnedFree {
    void operator()(int32_t* p) const;
  };
  using PinnedInts = std::unique_ptr<int32_t[], PinnedFree>;

  const parallel::ExchangeLayout& planned(int slot, const char* what) const;
  void check_width(const char* what, int width) const;
  void send_receive(const parallel::ExchangeLayout& layout, const bf16* send, const std::vector<int32_t>& send_offset,
                    const std::vector<int32_t>& send_count, bf16* recv, const std::vector<int32_t>& recv_offset,
                    const std::vector<int32_t>& recv_count, int width, cudaStream_t stream) const;
  const int32_t* segment_start(int slot) const;
  const int32_t* segment_source(int slot) const;

  const parallel::NcclComm& comm_;
  ExpertExchangeShape shape_;
  int ranks_ = 1, local_experts_ = 0;
  int64_t max_recv_rows_ = 0;
  size_t slot_ints_ = 0;                  // device table ints per slot: segment_start, segment_source, local_offsets
  DeviceBuffer<int32_t> table_;           // (P, E + 1) every rank's offsets
  PinnedInts table_host_;                 // (P, E + 1)
  DeviceBuffer<int32_t> slot_tables_;     // (slots, slot_ints_)
  PinnedInts slot_tables_host_;           // (slots, slot_ints_)
  std::vector<parallel::ExchangeLayout> layouts_;  // (slots)
  std::vector<bool> has_plan_;                     // (slots)
};

// The row permutes of the exchange (expert_exchange.cu), by parallel::exchange_staging_row over `segments` segments
// (segment_start (segments + 1), segment_source (segments), device): rows = recv_rows, width elements per row.
// Gather: expert_rows[o] = staging[staging_row(o)]. Scatter, its inverse: staging[staging_row(o)] = expert_rows[o].
// 16-byte copies when width % 8 == 0 and both buffers are 16-byte aligned. rows == 0 launches nothing.
void exchange_gather_rows(bf16* expert_rows, const bf16* staging, const int32_t* segment_start,
                          const int32_t* segment_source, int segments, int32_t rows, int width, cudaStream_t stream);
void exchange_scatter_rows(bf16* staging, const bf16* expert_rows, const int32_t* segment_start,
                           const int32_t* segment_source, int segments, int32_t rows, int width, cudaStream_t stream);

}  // namespace moetune::cuda
