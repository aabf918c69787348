// Why: see expert_exchange.h. The counts are exchanged as the whole (E + 1) offsets of every rank, so each rank can
// derive every other rank's sends and receives (parallel/exchange_layout.h) and all ranks agree on the matching
// ncclSend/ncclRecv pairs, or fail together, without a second round. A rank's own chunk is a device copy, not a
// send to itself; empty chunks post nothing on either side (both sides know they are empty).
#include "gpu/expert_exchange.h"

#include <algorithm>
#include <cstdint>

#include "parallel/nccl_check.h"

namespace moetune::cuda {

void ExpertExchange::PinnedFree::operator()(int32_t* p) const { cudaFreeHost(p); }

namespace {

int32_t* pinned_ints(size_t count) {
  void* p = nullptr;
  CUDA_CHECK(cudaMallocHost(&p, std::max<size_t>(count, 1) * sizeof(int32_t)));
  return static_cast<int32_t*>(p);
}

}  // namespace

ExpertExchange::ExpertExchange(const parallel::NcclComm& ep, const ExpertExchangeShape& shape)
    : comm_(ep), shape_(shape), ranks_(ep.size()) {
  if (shape.experts < 1 || shape.experts % ranks_ != 0)
    fail("expert exchange: ", shape.experts, " experts do not split evenly over an EP group of ", ranks_, " ranks");
  if (shape.max_rows < 0 || shape.max_width < 1 || shape.slots < 1 || shape.max_recv_rows < 0)
    fail("expert exchange: max_rows ", shape.max_rows, ", max_width ", shape.max_width, ", slots ", shape.slots,
         ", max_recv_rows ", shape.max_recv_rows);
  local_experts_ = shape.experts / ranks_;
  max_recv_rows_ = shape.max_recv_rows > 0 ? shape.max_recv_rows : worst_case_recv_rows(ranks_, shape.max_rows);
  if (max_recv_rows_ > INT32_MAX) fail("expert exchange: ", max_recv_rows_, " receive rows do not fit int32 row indices");
  const size_t segments = static_cast<size_t>(local_experts_) * ranks_;
  slot_ints_ = (segments + 1) + segments + (local_experts_ + 1);
  const size_t table_ints = static_cast<size_t>(ranks_) * (shape.experts + 1);
  table_ = DeviceBuffer<int32_t>(table_ints);
  table_host_ = PinnedInts(pinned_ints(table_ints));
  slot_tables_ = DeviceBuffer<int32_t>(slot_ints_ * shape.slots);
  slot_tables_host_ = PinnedInts(pinned_ints(slot_ints_ * shape.slots));
  layouts_.resize(shape.slots);
  has_plan_.assign(shape.slots, false);
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
  CUDA_CHECK(cudaStreamSynchronize(stream));
  has_plan_[slot] = false;
  layouts_[slot] = parallel::exchange_layout(std::vector<int32_t>(table_host_.get(), table_host_.get() + table_.size()),
                                             ranks_, E, comm_.rank(), shape_.max_rows, max_recv_rows_);
  const parallel::ExchangeLayout& layout = layouts_[slot];
  int32_t* host = slot_tables_host_.get() + slot_ints_ * slot;
  host = std::copy(layout.segment_start.begin(), layout.segment_start.end(), host);
  host = std::copy(layout.segment_source.begin(), layout.segment_source.end(), host);
  std::copy(layout.local_offsets.begin(), layout.local_offsets.end(), host);
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

void ExpertExchange::to_experts(int slot, const bf16* rows, bf16* expert_rows, int width, bf16* staging,
                                cudaStream_t stream) {
  const parallel::ExchangeLayout& layout = planned(slot, "to_experts");
  check_width("to_experts", width);
  send_receive(layout, rows, layout.send_offset, layout.send_count, staging, layout.recv_offset, layout.recv_count,
               width, stream);
  exchange_gather_rows(expert_rows, staging, segment_start(slot), segment_source(slot), layout.segments(),
                       layout.recv_rows, width, stream);
}

void ExpertExchange::from_experts(int slot, const bf16* expert_rows, bf16* rows, int width, bf16* staging,
                                  cudaStream_t stream) {
  const parallel::ExchangeLayout& layout = planned(slot, "from_experts");
  check_width("from_experts", width);
  exchange_scatter_rows(staging, expert_rows, segment_start(slot), segment_source(slot), layout.segments(),
                        layout.recv_rows, width, stream);
  send_receive(layout, staging, layout.recv_offset, layout.recv_count, rows, layout.send_offset, layout.send_count,
               width, stream);
}

}  // namespace moetune::cuda
