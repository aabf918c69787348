// Why: see expert_exchange.h. The counts are exchanged as the whole (E + 1) offsets of every rank, so each rank can
// derive every other rank's sends and receives (parallel/exchange_layout.h) and all ranks agree on the matching
// ncclSend/ncclRecv pairs, or fail together, without a second round. A rank's own chunk is a device copy, not a
// send to itself; empty chunks post nothing on either side (both sides know they are empty). NvlinkDirect derives,
// from the same table, where each of its rows lands on its owner (parallel/exchange_destinations.h).
#include "gpu/expert_exchange.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>

#include "parallel/exchange_destinations.h"
#include "parallel/nccl_check.h"

namespace moetune::cuda {

void ExpertExchange::PinnedFree::operator()(int32_t* p) const { cudaFreeHost(p); }

namespace {

int32_t* pinned_ints(size_t count) {
  void* p = nullptr;
  CUDA_CHECK(cudaMallocHost(&p, std::max<size_t>(count, 1) * sizeof(int32_t)));
  return static_cast<int32_t*>(p);
}

// Random per process, so ranks can tell peers in their own process (whose IPC handles they may not open) from others.
uint64_t process_token() {
  static const uint64_t token = [] {
    std::random_device device;
    return (static_cast<uint64_t>(device()) << 32) ^ device();
  }();
  return token;
}

// What each rank publishes about its expert-buffer block at construction (all-gathered as int32).
struct PeerRecord {
  cudaIpcMemHandle_t handle;
  uint64_t process;  // process_token()
  uint64_t address;  // the block in the owner's address space (usable as is by ranks of the same process)
  int32_t device;    // the owner's CUDA device (same-process peers enable access to it)
  int32_t unused;
};
static_assert(sizeof(PeerRecord) % sizeof(int32_t) == 0);
constexpr size_t kRecordInts = sizeof(PeerRecord) / sizeof(int32_t);

constexpr size_t kSignatureInts = 6;   // (slot, -slot, buffer, -buffer, width, -width)
constexpr size_t kSignatureStride = 8;  // signatures_: own, leading barrier's max, trailing barrier's max

struct StreamDestroy {
  void operator()(CUstream_st* stream) const { cudaStreamDestroy(stream); }
};

}  // namespace

const char* exchange_backend_name(ExchangeBackend backend) {
  return backend == ExchangeBackend::Nccl ? "nccl" : "nvlink-direct";
}

size_t ExpertExchange::expert_buffer_stride(int ranks, const ExpertExchangeShape& shape) {
  const int64_t rows = shape.max_recv_rows > 0 ? shape.max_recv_rows : worst_case_recv_rows(ranks, shape.max_rows);
  const size_t elements = static_cast<size_t>(std::max<int64_t>(rows, 0)) * std::max(shape.max_width, 0);
  constexpr size_t kAlign = 256 / sizeof(bf16);
  return std::max<size_t>((elements + kAlign - 1) / kAlign * kAlign, kAlign);
}

ExpertExchange::ExpertExchange(const parallel::NcclComm& ep, const ExpertExchangeShape& shape)
    : comm_(ep), shape_(shape), ranks_(ep.size()) {
  if (shape.experts < 1 || shape.experts % ranks_ != 0)
    fail("expert exchange: ", shape.experts, " experts do not split evenly over an EP group of ", ranks_, " ranks");
  if (shape.max_rows < 0 || shape.max_width < 1 || shape.slots < 1 || shape.max_recv_rows < 0 ||
      shape.expert_buffers < 0)
    fail("expert exchange: max_rows ", shape.max_rows, ", max_width ", shape.max_width, ", slots ", shape.slots,
         ", max_recv_rows ", shape.max_recv_rows, ", expert_buffers ", shape.expert_buffers);
  if (shape.backend == ExchangeBackend::NvlinkDirect && shape.expert_buffers < 1)
    fail("expert exchange: the NVLink backend moves rows only into and out of its own expert buffers; expert_buffers "
         "is 0");
  local_experts_ = shape.experts / ranks_;
  max_recv_rows_ = shape.max_recv_rows > 0 ? shape.max_recv_rows : worst_case_recv_rows(ranks_, shape.max_rows);
  if (max_recv_rows_ > INT32_MAX) fail("expert exchange: ", max_recv_rows_, " receive rows do not fit int32 row indices");
  const size_t segments = static_cast<size_t>(local_experts_) * ranks_;
  slot_ints_ = (segments + 1) + segments + (local_experts_ + 1) + (2 * static_cast<size_t>(shape.experts) + 1);
  const size_t table_ints = static_cast<size_t>(ranks_) * (shape.experts + 1);
  table_ = DeviceBuffer<int32_t>(table_ints);
  table_host_ = PinnedInts(pinned_ints(table_ints));
  slot_tables_ = DeviceBuffer<int32_t>(slot_ints_ * shape.slots);
  slot_tables_host_ = PinnedInts(pinned_ints(slot_ints_ * shape.slots));
  layouts_.resize(shape.slots);
  has_plan_.assign(shape.slots, false);
  if (shape.expert_buffers > 0) {
    buffer_stride_ = expert_buffer_stride(ranks_, shape);
    buffers_ = DeviceBuffer<bf16>(buffer_stride_ * shape.expert_buffers);
  }
  if (shape.backend == ExchangeBackend::NvlinkDirect) {
    signatures_ = DeviceBuffer<int32_t>(3 * kSignatureStride);
    signatures_.zero();
    disagreement_ = DeviceBuffer<int32_t>(1);
    disagreement_.zero();
    disagreement_host_ = PinnedInts(pinned_ints(1));
    disagreement_host_[0] = 0;
    connect_peers();
  }
}

ExpertExchange::~ExpertExchange() {
  for (void* block : opened_) cudaIpcCloseMemHandle(block);
}

// All-gathers every rank's PeerRecord, then maps each peer's block: its raw pointer for a peer of this process (after
// enabling peer access to its device), cudaIpcOpenMemHandle for a peer in another process.
void ExpertExchange::connect_peers() {
  int device = -1;
  CUDA_CHECK(cudaGetDevice(&device));
  if (device != comm_.device())
    fail("expert exchange: the current CUDA device is ", device, ", the EP communicator's is ", comm_.device());
  PeerRecord mine;
  std::memset(&mine, 0, sizeof(mine));
  CUDA_CHECK(cudaIpcGetMemHandle(&mine.handle, buffers_.data()));
  mine.process = process_token();
  mine.address = reinterpret_cast<uint64_t>(buffers_.data());
  mine.device = device;
  std::vector<int32_t> mine_ints(kRecordInts);
  std::memcpy(mine_ints.data(), &mine, sizeof(mine));
  DeviceBuffer<int32_t> send(mine_ints), gathered(kRecordInts * ranks_);
  cudaStream_t raw = nullptr;
  CUDA_CHECK(cudaStreamCreateWithFlags(&raw, cudaStreamNonBlocking));
  const std::unique_ptr<CUstream_st, StreamDestroy> stream(raw);
  comm_.all_gather(send.data(), gathered.data(), kRecordInts, stream.get());
  CUDA_CHECK(cudaStreamSynchronize(stream.get()));
  const std::vector<int32_t> all_ints = gathered.download();

  std::vector<bf16*> blocks(ranks_);
  for (int p = 0; p < ranks_; ++p) {
    PeerRecord peer;
    std::memcpy(&peer, all_ints.data() + kRecordInts * p, sizeof(peer));
    if (p == comm_.rank()) {
      blocks[p] = buffers_.data();
    } else if (peer.process == mine.process) {
      if (peer.device != device) {
        int can_access = 0;
        CUDA_CHECK(cudaDeviceCanAccessPeer(&can_access, device, peer.device));
        if (!can_access)
          fail("expert exchange (NVLink backend): GPU ", device, " cannot access GPU ", peer.device, " of rank ", p,
               " directly (no peer access); use the NCCL backend");
        const cudaError_t enabled = cudaDeviceEnablePeerAccess(peer.device, 0);
        if (enabled == cudaErrorPeerAccessAlreadyEnabled) cudaGetLastError();  // enabled by an earlier exchange
        else CUDA_CHECK(enabled);
      }
      blocks[p] = reinterpret_cast<bf16*>(peer.address);
    } else {
      void* block = nullptr;
      const cudaError_t opened = cudaIpcOpenMemHandle(&block, peer.handle, cudaIpcMemLazyEnablePeerAccess);
      if (opened != cudaSuccess)
        fail("expert exchange (NVLink backend): rank ", comm_.rank(), " cannot map the expert buffers of rank ", p,
             " (cudaIpcOpenMemHandle: ", cudaGetErrorString(opened),
             "); every EP rank must be on one node with peer access between its GPUs; use the NCCL backend");
      opened_.push_back(block);
      blocks[p] = static_cast<bf16*>(block);
    }
  }
  peer_blocks_ = DeviceBuffer<bf16*>(blocks);
}

size_t ExpertExchange::staging_elements() const {
  if (shape_.backend == ExchangeBackend::NvlinkDirect) return 0;
  return static_cast<size_t>(max_recv_rows_) * shape_.max_width;
}

bf16* ExpertExchange::expert_rows_buffer(int index) {
  if (index < 0 || index >= shape_.expert_buffers)
    fail("expert exchange: expert buffer ", index, " of ", shape_.expert_buffers);
  return buffers_.data() + buffer_stride_ * index;
}

int ExpertExchange::buffer_index(const char* what, const bf16* expert_rows) const {
  for (int i = 0; i < shape_.expert_buffers; ++i)
    if (expert_rows == buffers_.data() + buffer_stride_ * i) return i;
  fail("expert exchange (NVLink backend): ", what, " takes only the exchange's own expert buffers "
       "(expert_rows_buffer(0..", shape_.expert_buffers - 1, ")), which its peers can reach");
}

const parallel::ExchangeLayout& ExpertExchange::planned(int slot, const char* what) const {
  if (slot < 0 || slot >= shape_.slots) fail("expert exchange: ", what, " of slot ", slot, " of ", shape_.slots);
  if (!has_plan_[slot]) fail("expert exchange: ", what, " of slot ", slot, " before plan()");
  return layouts_[slot];
}

const parallel::ExchangeLayout& ExpertExchange::layout(int slot) const { return planned(slot, "layout"); }

const int32_t* ExpertExchange::segment_start(int slot) const { return slot_tables_.data() + slot_ints_ * slot; }

const int32_t* ExpertExchange::segment_source(int slot) const {
  return segment_start(slot) + static_cast<size_t>(local_experts_) * ranks_ + 1;
}

const int32_t* ExpertExchange::local_offsets(int slot) const {
  planned(slot, "local_offsets");
  return segment_source(slot) + static_cast<size_t>(local_experts_) * ranks_;
}

const int32_t* ExpertExchange::own_offsets(int slot) const {
  return segment_source(slot) + static_cast<size_t>(local_experts_) * ranks_ + local_experts_ + 1;
}

const int32_t* ExpertExchange::destination_base(int slot) const { return own_offsets(slot) + shape_.experts + 1; }

void ExpertExchange::check_width(const char* what, int width) const {
  if (width < 1 || width > shape_.max_width)
    fail("expert exchange: ", what, " of rows ", width, " wide; the exchange was sized for 1..", shape_.max_width);
}

void ExpertExchange::plan(int slot, const int32_t* offsets, cudaStream_t stream) {
  if (slot < 0 || slot >= shape_.slots) fail("expert exchange: plan of slot ", slot, " of ", shape_.slots);
  const int E = shape_.experts;
  comm_.all_gather(offsets, table_.data(), static_cast<size_t>(E) + 1, stream);
  CUDA_CHECK(cudaMemcpyAsync(table_host_.get(), table_.data(), table_.size() * sizeof(int32_t), cudaMemcpyDeviceToHost,
                             stream));
  const bool direct = shape_.backend == ExchangeBackend::NvlinkDirect;
  if (direct)
    CUDA_CHECK(cudaMemcpyAsync(disagreement_host_.get(), disagreement_.data(), sizeof(int32_t),
                               cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  has_plan_[slot] = false;
  if (direct && disagreement_host_[0] != 0) {
    disagreement_.zero();
    fail("expert exchange (NVLink backend): in an earlier to_experts / from_experts the EP ranks passed different "
         "slots, expert buffers or widths; no rows were moved by that call");
  }
  const std::vector<int32_t> table(table_host_.get(), table_host_.get() + table_.size());
  layouts_[slot] = parallel::exchange_layout(table, ranks_, E, comm_.rank(), shape_.max_rows, max_recv_rows_);
  const parallel::ExchangeLayout& layout = layouts_[slot];
  const std::vector<int32_t> base =
      direct ? parallel::exchange_destination_base(table, ranks_, E, comm_.rank(), shape_.max_rows, max_recv_rows_)
             : std::vector<int32_t>(E, 0);
  const int32_t* own = table.data() + static_cast<size_t>(E + 1) * comm_.rank();
  int32_t* host = slot_tables_host_.get() + slot_ints_ * slot;
  host = std::copy(layout.segment_start.begin(), layout.segment_start.end(), host);
  host = std::copy(layout.segment_source.begin(), layout.segment_source.end(), host);
  host = std::copy(layout.local_offsets.begin(), layout.local_offsets.end(), host);
  host = std::copy(own, own + E + 1, host);
  std::copy(base.begin(), base.end(), host);
  CUDA_CHECK(cudaMemcpyAsync(slot_tables_.data() + slot_ints_ * slot, slot_tables_host_.get() + slot_ints_ * slot,
                             slot_ints_ * sizeof(int32_t), cudaMemcpyHostToDevice, stream));
  has_plan_[slot] = true;
}

// Sends send[send_offset[p], + send_count[p]) rows to every rank p and receives recv_count[p] rows from p into
// recv[recv_offset[p], ...); the own chunk is copied.
void ExpertExchange::send_receive(const parallel::ExchangeLayout& layout, const bf16* send,
                                  const std::vector<int32_t>& send_offset, const std::vector<int32_t>& send_count,
                                  bf16* recv, const std::vector<int32_t>& recv_offset,
                                  const std::vector<int32_t>& recv_count, int width, cudaStream_t stream) const {
  const size_t w = static_cast<size_t>(width);
  const int me = layout.rank;
  MT_ASSERT(send_count[me] == recv_count[me]);
  if (send_count[me] > 0)
    CUDA_CHECK(cudaMemcpyAsync(recv + recv_offset[me] * w, send + send_offset[me] * w,
                               send_count[me] * w * sizeof(bf16), cudaMemcpyDeviceToDevice, stream));
  if (layout.ranks == 1) return;
  NCCL_CHECK(ncclGroupStart());
  for (int p = 0; p < layout.ranks; ++p) {
    if (p == me) continue;
    if (send_count[p] > 0)
      NCCL_CHECK(ncclSend(send + send_offset[p] * w, send_count[p] * w, ncclBfloat16, p, comm_.get(), stream));
    if (recv_count[p] > 0)
      NCCL_CHECK(ncclRecv(recv + recv_offset[p] * w, recv_count[p] * w, ncclBfloat16, p, comm_.get(), stream));
  }
  NCCL_CHECK(ncclGroupEnd());
}

// NvlinkDirect: barrier; one copy kernel; barrier (see the header). The barriers all-reduce the signature, and the
// kernel moves nothing unless every rank signed the same (slot, buffer, width).
void ExpertExchange::direct(int slot, const bf16* send, bf16* receive, const bf16* expert_rows, int width,
                            bool to_experts, cudaStream_t stream) {
  const char* what = to_experts ? "to_experts" : "from_experts";
  const parallel::ExchangeLayout& layout = planned(slot, what);
  check_width(what, width);
  const int buffer = buffer_index(what, expert_rows);
  int32_t* own = signatures_.data();
  int32_t* leading = own + kSignatureStride;
  int32_t* trailing = leading + kSignatureStride;
  if (ranks_ > 1) {
    exchange_sign(own, slot, buffer, width, stream);
    comm_.all_reduce(own, leading, kSignatureInts, ncclMax, stream);
  }
  DirectRowsArgs args;
  args.blocks = peer_blocks_.data();
  args.buffer_offset = buffer_stride_ * buffer;
  args.send = send;
  args.receive = receive;
  args.offsets = own_offsets(slot);
  args.base = destination_base(slot);
  args.agreed = ranks_ > 1 ? leading : nullptr;
  args.disagreement = disagreement_.data();
  args.experts = shape_.experts;
  args.local_experts = local_experts_;
  args.slot = slot;
  args.buffer = buffer;
  args.width = width;
  args.rows = layout.send_rows;
  exchange_direct_rows(args, to_experts, stream);
  if (ranks_ > 1) comm_.all_reduce(own, trailing, kSignatureInts, ncclMax, stream);
}

void ExpertExchange::to_experts(int slot, const bf16* rows, bf16* expert_rows, int width, bf16* staging,
                                cudaStream_t stream) {
  if (shape_.backend == ExchangeBackend::NvlinkDirect)
    return direct(slot, rows, nullptr, expert_rows, width, true, stream);
  const parallel::ExchangeLayout& layout = planned(slot, "to_experts");
  check_width("to_experts", width);
  send_receive(layout, rows, layout.send_offset, layout.send_count, staging, layout.recv_offset, layout.recv_count,
               width, stream);
  exchange_gather_rows(expert_rows, staging, segment_start(slot), segment_source(slot), layout.segments(),
                       layout.recv_rows, width, stream);
}

void ExpertExchange::from_experts(int slot, const bf16* expert_rows, bf16* rows, int width, bf16* staging,
                                  cudaStream_t stream) {
  if (shape_.backend == ExchangeBackend::NvlinkDirect)
    return direct(slot, nullptr, rows, expert_rows, width, false, stream);
  const parallel::ExchangeLayout& layout = planned(slot, "from_experts");
  check_width("from_experts", width);
  exchange_scatter_rows(staging, expert_rows, segment_start(slot), segment_source(slot), layout.segments(),
                        layout.recv_rows, width, stream);
  send_receive(layout, staging, layout.recv_offset, layout.recv_count, rows, layout.send_offset, layout.send_count,
               width, stream);
}

}  // namespace moetune::cuda
