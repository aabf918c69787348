// Why: see gpu_loader.h. The loader hands out pieces of at most 16 MB of checkpoint bytes, so a staging buffer of 8 M
// bf16 elements holds any piece (a bf16/fp16 piece has at most 8 M elements, an fp32 one 4 M).
#include "gpu/gpu_loader.h"

#include <cstring>

#include "core/dtype.h"

namespace moetune::cuda {

namespace {
constexpr size_t kStagingElements = size_t{8} << 20;
}  // namespace

GpuBf16Sink::GpuBf16Sink(bf16* device_params) : device_params_(device_params) {}

GpuBf16Sink::~GpuBf16Sink() { release(); }

void GpuBf16Sink::release() {
  for (Worker& w : workers_) {
    if (w.stream) cudaStreamSynchronize(w.stream);
    for (int k = 0; k < 2; ++k) {
      if (w.staging[k]) cudaFreeHost(w.staging[k]);
      if (w.copied[k]) cudaEventDestroy(w.copied[k]);
    }
    if (w.stream) cudaStreamDestroy(w.stream);
  }
  workers_.clear();
}

void GpuBf16Sink::begin(int workers) {
  release();
  workers_.resize(workers);
  for (Worker& w : workers_) {
    CUDA_CHECK(cudaStreamCreateWithFlags(&w.stream, cudaStreamNonBlocking));
    for (int k = 0; k < 2; ++k) {
      CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&w.staging[k]), kStagingElements * sizeof(bf16)));
      CUDA_CHECK(cudaEventCreateWithFlags(&w.copied[k], cudaEventDisableTiming));
      CUDA_CHECK(cudaEventRecord(w.copied[k], w.stream));
    }
  }
}

void GpuBf16Sink::write(const HfTensor& dest, const TensorEntry& src, int worker) {
  Worker& w = workers_[worker];
  const size_t count = dest.numel;
  MT_ASSERT(count <= kStagingElements);
  const int k = w.next;
  w.next ^= 1;
  CUDA_CHECK(cudaEventSynchronize(w.copied[k]));  // the previous copy out of this staging buffer has finished
  bf16* staging = w.staging[k];
  if (src.dtype == DType::BF16) {
    std::memcpy(staging, src.data, count * sizeof(bf16));
  } else {
    // Through fp32, in chunks, rounding to bf16 as PyTorch's .to(torch.bfloat16) does (round to nearest even).
    float buffer[4096];
    for (size_t done = 0; done < count; done += 4096) {
      const size_t n = std::min<size_t>(4096, count - done);
      convert_to_f32(src.dtype, src.data + done * dtype_size(src.dtype), buffer, n);
      convert_from_f32(DType::BF16, buffer, staging + done, n);
    }
  }
  CUDA_CHECK(cudaMemcpyAsync(device_params_ + dest.offset, staging, count * sizeof(bf16), cudaMemcpyHostToDevice,
                             w.stream));
  CUDA_CHECK(cudaEventRecord(w.copied[k], w.stream));
}

void GpuBf16Sink::end() {
  for (Worker& w : workers_) CUDA_CHECK(cudaStreamSynchronize(w.stream));
}

LoadReport load_hf_weights_to_gpu(const std::string& folder, const ModelConfig& config, const ParamLayout& layout,
                                  bf16* device_params, const LoadOptions& options) {
  GpuBf16Sink sink(device_params);
  return stream_hf_weights(folder, config, layout, sink, options);
}

}  // namespace moetune::cuda
