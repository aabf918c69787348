// Why: expert parallelism (EP) puts each routed expert on one rank of the EP group, so every MoE layer must move each
// routed row to the rank holding its expert and bring the result back, forward and backward. Two implementations sit
// behind the same calls (ExchangeBackend), so they can be measured against each other and the simpler one stays as
// the reference:
//   Nccl: a count exchange, then one ncclSend/ncclRecv per peer into a staging buffer, then a gather that puts the
//     received rows in local-expert order (and the reverse).
//   NvlinkDirect: no staging and no separate permute. to_experts is ONE kernel that writes each of this rank's rows
//     straight into its final local-expert-major row of the owner's expert buffer over NVLink; from_experts is one
//     kernel that reads each result straight from there into this rank's row position. The expert buffers are owned by
//     the exchange (allocated once at construction, mapped into every peer with CUDA IPC), so the engine must hand its
//     expert-side rows through expert_rows_buffer().
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
// With NvlinkDirect, expert_in, expert_out, d_expert_out and d_expert_in must be expert_rows_buffer()s: one per MoE
// layer for expert_in (kept for the backward's weight gradient), and one shared transient buffer for the other three
// (forward and backward never overlap), so expert_buffers = MoE layers + 1 (2 with recompute's shared layer set).
//
// Orders (parallel/exchange_layout.h, checked against parallel/ep_reference.h): rank r owns experts [r*L, (r+1)*L);
// the rows rank s sends to rank d are the contiguous run of its sorted buffer for d's experts; rank d's expert-side
// rows are ordered by local expert, then source rank, then the source's (token, slot) order: ep_reference's receive
// order. NvlinkDirect writes row i of rank s to parallel::exchange_destination_row (exchange_destinations.h), the same
// order. With P = 1 both calls are copies and local_offsets == offsets.
//
// Memory. The object allocates, once, at construction: an all-gather table (P, E + 1) int32 and its pinned host copy,
// per slot a small device table ((2*L*P + 1) + (L + 1) + (2*E + 1) int32) and its pinned upload buffer, and
// expert_buffers expert buffers (max_recv_rows, max_width) bf16 in one allocation (the one NvlinkDirect maps into the
// peers). With Nccl the caller may instead pass its own expert-side buffers, and owns the staging workspace
// (staging_elements() bf16; one is enough for all slots and both directions, since each call uses it only until its
// rows are delivered); NvlinkDirect needs no staging (staging_elements() == 0, pass nullptr).
// Worst case: a rank's experts receive every row of every rank, recv_rows <= P * max_rows; expert-side buffers and
// staging are sized from max_recv_rows (default that worst case; a smaller capacity is a bet on load balance, and
// plan() fails on every rank together when any rank would exceed it).
//
// NvlinkDirect synchronisation. Peers write into and read from this rank's buffers, so each call is
//   barrier; one copy kernel; barrier
// where a barrier is a stream-ordered ncclAllReduce (max) of 6 int32 on the EP communicator: it completes on a rank
// only once every rank's stream has reached it, i.e. every rank finished all its earlier work (its GEMMs into or out of
// its buffers, its earlier copy kernels, whose NVLink stores are complete when the kernel is). The leading barrier
// keeps a writer off buffers a peer still reads (the previous layer's or call's data) and makes the expert side's
// results visible to readers; the trailing barrier makes the arrived rows visible to the owner and keeps the owner off
// its buffer until every reader is done. So when a call returns (in stream order), no peer touches this rank's buffers
// until the next call: the caller may use them freely between calls. The barriers carry (slot, buffer, width) of every
// rank: when the ranks disagree (a misuse that would scramble rows silently), the kernels move nothing and the next
// plan() fails on every rank. The peer memory is CUDA IPC (cudaIpcGetMemHandle of the one allocation, handles
// all-gathered over the EP communicator at construction, cudaIpcOpenMemHandle with lazy peer access); ranks in the same
// process (the tests: one thread per GPU) use each other's pointers directly after cudaDeviceEnablePeerAccess, since a
// process cannot open its own IPC handles. All EP ranks must share a node with peer access (NVLink); multicast/NVLS is
// not used. Construction of an NvlinkDirect exchange is collective over the EP group, and the current device must be
// the communicator's. Destroy it on every rank after its last call (it closes the peers' mappings and frees its own).
//
// Streams: each call does all its work (kernels, copies, the NCCL calls) on the stream it is given. Calls of one
// ExpertExchange must be stream-ordered one after the other: on one stream, or on another stream that waits (an event)
// for the previous call's work and that the next call's stream waits for in turn (the engine's backward returns rows
// on a second stream this way, gpu/gpu_layers.cpp); the tables, staging, barriers and, with NvlinkDirect, the
// expert buffers are shared by all calls. The communicator is held by reference: it must outlive the exchange, stay
// where it is (not be moved from), and not be used by another stream while a call is in flight.
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

enum class ExchangeBackend {
  Nccl,          // ncclSend/ncclRecv through a staging buffer, then a permute kernel
  NvlinkDirect,  // one copy kernel per call straight into / out of the owner's expert buffer over NVLink (CUDA IPC)
};

const char* exchange_backend_name(ExchangeBackend backend);

struct ExpertExchangeShape {
  int experts = 0;          // E, global routed experts per MoE layer (E % P == 0)
  int64_t max_rows = 0;     // the most rows (tokens * top_k) one rank passes to plan()
  int max_width = 0;        // the widest row moved, in elements (the hidden size)
  int slots = 1;            // plans kept at once (one per MoE layer)
  int64_t max_recv_rows = 0;  // rows one rank's experts can take; 0: the worst case, P * max_rows
  ExchangeBackend backend = ExchangeBackend::Nccl;
  int expert_buffers = 0;   // expert buffers the exchange owns (expert_rows_buffer); NvlinkDirect needs at least 1
};

class ExpertExchange {
 public:
  // `ep`: the EP group's communicator (NcclComm::split / ep_dp_comms); its rank r owns experts [r*L, (r+1)*L).
  // NvlinkDirect: collective over the EP group (maps every rank's expert buffers into every other rank).
  ExpertExchange(const parallel::NcclComm& ep, const ExpertExchangeShape& shape);
  ~ExpertExchange();
  ExpertExchange(const ExpertExchange&) = delete;
  ExpertExchange& operator=(const ExpertExchange&) = delete;

  static int64_t worst_case_recv_rows(int ranks, int64_t max_rows) { return ranks * max_rows; }
  // Elements between consecutive expert buffers (max_recv_rows * max_width, rounded up to 256 bytes), for memory plans:
  // the exchange owns expert_buffers times this many bf16.
  static size_t expert_buffer_stride(int ranks, const ExpertExchangeShape& shape);
  int64_t max_recv_rows() const { return max_recv_rows_; }
  ExchangeBackend backend() const { return shape_.backend; }
  // The staging workspace every to_experts / from_experts call takes: max_recv_rows * max_width bf16 with Nccl, none
  // with NvlinkDirect.
  size_t staging_elements() const;
  int local_experts() const { return local_experts_; }
  int expert_buffers() const { return shape_.expert_buffers; }
  // Expert buffer `index` (max_recv_rows rows of up to max_width; a call of width w uses it as (recv_rows, w)). Device
  // memory of this rank; with NvlinkDirect its peers write and read it during to_experts / from_experts only.
  bf16* expert_rows_buffer(int index);

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
  // 1 <= width <= max_width. Collective over the EP group. NvlinkDirect: expert_rows must be expert_rows_buffer(i),
  // the same i, slot and width on every rank.
  void to_experts(int slot, const bf16* rows, bf16* expert_rows, int width, bf16* staging, cudaStream_t stream);

  // Return, the exact reverse: expert_rows (recv_rows, width) in local-expert-major order; rows (layout.send_rows,
  // width), overwritten: row i holds what the expert side computed for this rank's sorted row i. NvlinkDirect:
  // expert_rows must be expert_rows_buffer(i), the same i, slot and width on every rank.
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
  const int32_t* own_offsets(int slot) const;       // (E + 1) this rank's offsets as planned
  const int32_t* destination_base(int slot) const;  // (E) parallel::exchange_destination_base
  void connect_peers();
  int buffer_index(const char* what, const bf16* expert_rows) const;
  void direct(int slot, const bf16* send, bf16* receive, const bf16* expert_rows, int width, bool to_experts,
              cudaStream_t stream);

  const parallel::NcclComm& comm_;
  ExpertExchangeShape shape_;
  int ranks_ = 1, local_experts_ = 0;
  int64_t max_recv_rows_ = 0;
  size_t slot_ints_ = 0;                  // device table ints per slot: segment_start, segment_source,
                                          // local_offsets, own offsets, destination base
  DeviceBuffer<int32_t> table_;           // (P, E + 1) every rank's offsets
  PinnedInts table_host_;                 // (P, E + 1)
  DeviceBuffer<int32_t> slot_tables_;     // (slots, slot_ints_)
  PinnedInts slot_tables_host_;           // (slots, slot_ints_)
  std::vector<parallel::ExchangeLayout> layouts_;  // (slots)
  std::vector<bool> has_plan_;                     // (slots)
  size_t buffer_stride_ = 0;               // expert_buffer_stride
  DeviceBuffer<bf16> buffers_;             // (expert_buffers, buffer_stride_) one cudaMalloc: the IPC-mapped block
  // NvlinkDirect
  std::vector<void*> opened_;              // peers' blocks opened with cudaIpcOpenMemHandle (closed at destruction)
  DeviceBuffer<bf16*> peer_blocks_;        // (P) every rank's buffers_ block, in this process's address space
  DeviceBuffer<int32_t> signatures_;       // (3, 8) this call's (slot, -slot, buffer, -buffer, width, -width), and
                                           // its max over ranks at the leading and at the trailing barrier
  DeviceBuffer<int32_t> disagreement_;     // (1) set by a copy kernel when the ranks' signatures differ
  PinnedInts disagreement_host_;           // (1)
};

// The row permutes of the exchange (expert_exchange.cu), by parallel::exchange_staging_row over `segments` segments
// (segment_start (segments + 1), segment_source (segments), device): rows = recv_rows, width elements per row.
// Gather: expert_rows[o] = staging[staging_row(o)]. Scatter, its inverse: staging[staging_row(o)] = expert_rows[o].
// 16-byte copies when width % 8 == 0 and both buffers are 16-byte aligned. rows == 0 launches nothing.
void exchange_gather_rows(bf16* expert_rows, const bf16* staging, const int32_t* segment_start,
                          const int32_t* segment_source, int segments, int32_t rows, int width, cudaStream_t stream);
void exchange_scatter_rows(bf16* staging, const bf16* expert_rows, const int32_t* segment_start,
                           const int32_t* segment_source, int segments, int32_t rows, int width, cudaStream_t stream);

// NvlinkDirect's copy (expert_exchange.cu), one warp per row of this rank, by parallel::exchange_destination_row.
// to_experts: blocks[owner][buffer_offset + target row] = send[row]; else receive[row] = blocks[owner][...]. The
// blocks may live on other GPUs (peer pointers) or, in the one-GPU test, be plain buffers of one device.
struct DirectRowsArgs {
  bf16* const* blocks = nullptr;        // (P) every rank's expert-buffer block in this process's address space
  size_t buffer_offset = 0;             // elements from a block's start to the expert buffer in use (every rank alike)
  const bf16* send = nullptr;           // (rows, width) to_experts: this rank's sorted rows
  bf16* receive = nullptr;              // (rows, width) from_experts: this rank's sorted rows, overwritten
  const int32_t* offsets = nullptr;     // (E + 1) this rank's global-expert offsets
  const int32_t* base = nullptr;        // (E) parallel::exchange_destination_base of this rank
  const int32_t* agreed = nullptr;      // (6) max over ranks of (slot, -slot, buffer, -buffer, width, -width); null:
                                        // no check (one rank)
  int32_t* disagreement = nullptr;      // (1) set to 1 when agreed differs from this rank's own values
  int experts = 0, local_experts = 0, slot = 0, buffer = 0, width = 0;
  int32_t rows = 0;                     // this rank's rows (offsets[E])
};
// 16-byte copies when width % 8 == 0 and every row start is 16-byte aligned. rows == 0 launches nothing.
void exchange_direct_rows(const DirectRowsArgs& args, bool to_experts, cudaStream_t stream);
// signature (6) = (slot, -slot, buffer, -buffer, width, -width), stream-ordered (what the barriers all-reduce).
void exchange_sign(int32_t* signature, int slot, int buffer, int width, cudaStream_t stream);

}  // namespace moetune::cuda
