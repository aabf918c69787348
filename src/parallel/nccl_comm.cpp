// Why: see nccl_comm.h. Communicators are created blocking (no config: the defaults of the NCCL found at run time, so a
// binary built against newer headers still runs on an older 2.28 library), and destroyed without throwing.
#include "parallel/nccl_comm.h"

#include <cstdlib>
#include <utility>

#include "parallel/nccl_check.h"

namespace moetune::parallel {

namespace {

template <class T>
constexpr ncclDataType_t nccl_type();
template <>
constexpr ncclDataType_t nccl_type<float>() { return ncclFloat32; }
template <>
constexpr ncclDataType_t nccl_type<cuda::bf16>() { return ncclBfloat16; }
template <>
constexpr ncclDataType_t nccl_type<int32_t>() { return ncclInt32; }
template <>
constexpr ncclDataType_t nccl_type<double>() { return ncclFloat64; }

}  // namespace

int select_cuda_device(const ProcessGroupInfo& group) {
  int visible = 0;
  CUDA_CHECK(cudaGetDeviceCount(&visible));
  const int device = visible == 1 ? 0 : group.local_rank;
  if (device >= visible)
    fail(group.source, ": local rank ", group.local_rank, " of ", group.local_world_size,
         " has no GPU: this process sees ", visible, " CUDA devices (one process per GPU is required)");
  CUDA_CHECK(cudaSetDevice(device));
  return device;
}

NcclComm::NcclComm(ncclComm_t comm, int device) : comm_(comm), device_(device) {
  NCCL_CHECK(ncclCommUserRank(comm_, &rank_));
  NCCL_CHECK(ncclCommCount(comm_, &size_));
}

NcclComm::~NcclComm() { destroy(); }

NcclComm::NcclComm(NcclComm&& other) noexcept
    : comm_(std::exchange(other.comm_, nullptr)),
      rank_(other.rank_),
      size_(other.size_),
      device_(std::exchange(other.device_, -1)) {}

NcclComm& NcclComm::operator=(NcclComm&& other) noexcept {
  if (this != &other) {
    destroy();
    comm_ = std::exchange(other.comm_, nullptr);
    rank_ = other.rank_;
    size_ = other.size_;
    device_ = std::exchange(other.device_, -1);
  }
  return *this;
}

void NcclComm::destroy() {
  if (comm_) ncclCommDestroy(comm_);  // errors ignored: a destructor must not throw, and the run is ending
  comm_ = nullptr;
}

void NcclComm::abort() {
  if (comm_) ncclCommAbort(comm_);
  comm_ = nullptr;
}

ncclUniqueId NcclComm::unique_id() {
  ncclUniqueId id;
  NCCL_CHECK(ncclGetUniqueId(&id));
  return id;
}

NcclComm NcclComm::join(const ncclUniqueId& id, int size, int rank) {
  if (size < 1 || rank < 0 || rank >= size) fail("NCCL: rank ", rank, " of a communicator of ", size);
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  ncclComm_t comm = nullptr;
  NCCL_CHECK(ncclCommInitRank(&comm, size, id, rank));
  return NcclComm(comm, device);
}

NcclComm NcclComm::world(const ProcessGroupInfo& group) {
  select_cuda_device(group);
  if (group.world_size == 1) return join(unique_id(), 1, 0);
  // Every rank points NCCL at rank 0's bootstrap address; ncclGetUniqueId then encodes that address instead of
  // starting a root, and ncclCommInitRank on rank 0 listens there. A user's own NCCL_COMM_ID is kept (overwrite 0).
  if (setenv("NCCL_COMM_ID", nccl_comm_id(group).c_str(), 0) != 0) fail("NCCL: cannot set NCCL_COMM_ID");
  return join(unique_id(), group.world_size, group.rank);
}

NcclComm NcclComm::split(int color, int key) const {
  MT_ASSERT(comm_ != nullptr);
  ncclComm_t part = nullptr;
  NCCL_CHECK(ncclCommSplit(comm_, color, key, &part, nullptr));
  if (!part) fail("NCCL: split with color ", color, " gave no communicator");
  return NcclComm(part, device_);
}

template <class T>
void NcclComm::all_reduce(const T* send, T* recv, size_t count, ncclRedOp_t op, cudaStream_t stream) const {
  NCCL_CHECK(ncclAllReduce(send, recv, count, nccl_type<T>(), op, comm_, stream));
}

template <class T>
void NcclComm::reduce_scatter(const T* send, T* recv, size_t recv_count, ncclRedOp_t op, cudaStream_t stream) const {
  NCCL_CHECK(ncclReduceScatter(send, recv, recv_count, nccl_type<T>(), op, comm_, stream));
}

template <class T>
void NcclComm::all_gather(const T* send, T* recv, size_t send_count, cudaStream_t stream) const {
  NCCL_CHECK(ncclAllGather(send, recv, send_count, nccl_type<T>(), comm_, stream));
}

template void NcclComm::all_reduce(const float*, float*, size_t, ncclRedOp_t, cudaStream_t) const;
template void NcclComm::all_reduce(const cuda::bf16*, cuda::bf16*, size_t, ncclRedOp_t, cudaStream_t) const;
template void NcclComm::all_reduce(const int32_t*, int32_t*, size_t, ncclRedOp_t, cudaStream_t) const;
template void NcclComm::all_reduce(const double*, double*, size_t, ncclRedOp_t, cudaStream_t) const;
template void NcclComm::reduce_scatter(const float*, float*, size_t, ncclRedOp_t, cudaStream_t) const;
template void NcclComm::reduce_scatter(const cuda::bf16*, cuda::bf16*, size_t, ncclRedOp_t, cudaStream_t) const;
template void NcclComm::reduce_scatter(const int32_t*, int32_t*, size_t, ncclRedOp_t, cudaStream_t) const;
template void NcclComm::all_gather(const float*, float*, size_t, cudaStream_t) const;
template void NcclComm::all_gather(const cuda::bf16*, cuda::bf16*, size_t, cudaStream_t) const;
template void NcclComm::all_gather(const int32_t*, int32_t*, size_t, cudaStream_t) const;

EpDpComms ep_dp_comms(NcclComm world, const ParallelLayout& layout) {
  if (world.size() != layout.world_size())
    fail("NCCL: a world of ", world.size(), " ranks for an EP ", layout.ep, " x DP ", layout.dp, " layout");
  const int rank = world.rank();
  EpDpComms comms;
  comms.ep = world.split(layout.dp_rank(rank), layout.ep_rank(rank));
  comms.dp = world.split(layout.ep_rank(rank), layout.dp_rank(rank));
  comms.world = std::move(world);
  return comms;
}

}  // namespace moetune::parallel
