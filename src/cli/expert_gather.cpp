// Why: see expert_gather.h. Each call makes its own stream and waits for it, so nothing here overlaps training: saves
// and the per-step stop-signal agreement are rare or tiny.
#include "cli/expert_gather.h"

#ifdef MOETUNE_HAVE_CUDA

#include <algorithm>

#include "core/error.h"
#include "ops/cuda/device_buffer.h"

namespace moetune::cli {

namespace {

// A stream of this call's own, destroyed with it.
class OwnStream {
 public:
  OwnStream() { CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }
  ~OwnStream() { cudaStreamDestroy(stream_); }
  OwnStream(const OwnStream&) = delete;
  OwnStream& operator=(const OwnStream&) = delete;
  cudaStream_t get() const { return stream_; }
  void wait() const { CUDA_CHECK(cudaStreamSynchronize(stream_)); }

 private:
  cudaStream_t stream_ = nullptr;
};

}  // namespace

void gather_expert_shards(const parallel::NcclComm& ep, const std::vector<std::vector<ShardRun>>& runs_by_rank,
                          const std::vector<float>& local, float* full) {
  const int ranks = ep.size();
  const bool root = ep.rank() == 0;
  if (static_cast<int>(runs_by_rank.size()) != ranks)
    fail("gather_expert_shards: runs of ", runs_by_rank.size(), " ranks for an EP group of ", ranks);
  if (root != (full != nullptr)) fail("gather_expert_shards: only EP rank 0 passes the full arena");
  const size_t total = local.size();  // the same on every EP rank (one shard layout size)
  const size_t piece = std::max<size_t>(1, std::min(total, kGatherPieceFloats));
  cuda::DeviceBuffer<float> send(piece);   // (piece) this rank's part
  cuda::DeviceBuffer<float> recv(piece * static_cast<size_t>(ranks));  // (ranks, piece) every rank's part
  std::vector<float> host(root ? piece * static_cast<size_t>(ranks) : 0);  // recv on EP rank 0
  const OwnStream stream;
  for (size_t begin = 0; begin < total; begin += piece) {
    const size_t count = std::min(piece, total - begin);
    CUDA_CHECK(cudaMemcpyAsync(send.data(), local.data() + begin, count * sizeof(float), cudaMemcpyHostToDevice,
                               stream.get()));
    ep.all_gather(send.data(), recv.data(), count, stream.get());
    if (root)
      CUDA_CHECK(cudaMemcpyAsync(host.data(), recv.data(), count * static_cast<size_t>(ranks) * sizeof(float),
                                 cudaMemcpyDeviceToHost, stream.get()));
    stream.wait();
    if (!root) continue;
    for (int q = 0; q < ranks; ++q)
      place_shard_piece(runs_by_rank[q], host.data() + static_cast<size_t>(q) * count, begin, count, full, q != 0);
  }
}

void barrier(const parallel::NcclComm& comm) { max_over_ranks(comm, 0); }

int max_over_ranks(const parallel::NcclComm& comm, int value) {
  const OwnStream stream;
  cuda::DeviceBuffer<int32_t> slot(1);  // (1)
  int32_t host = value;
  CUDA_CHECK(cudaMemcpyAsync(slot.data(), &host, sizeof host, cudaMemcpyHostToDevice, stream.get()));
  comm.all_reduce(slot.data(), slot.data(), 1, ncclMax, stream.get());
  CUDA_CHECK(cudaMemcpyAsync(&host, slot.data(), sizeof host, cudaMemcpyDeviceToHost, stream.get()));
  stream.wait();
  return host;
}

}  // namespace moetune::cli

#endif
