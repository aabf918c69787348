// Why: see rank_agreement.h. Each call makes its own stream and waits for it, so nothing here overlaps training: the
// agreements are rare or tiny.
#include "cli/rank_agreement.h"

#ifdef MOETUNE_HAVE_CUDA

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
