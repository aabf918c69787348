// Why: a 30B-parameter checkpoint must not pass through a 120 GB fp32 host arena on its way to the GPU. This sink of
// the streaming loader (io/streaming_loader.h) converts each piece to bf16 in a pinned staging buffer of its worker and
// copies it to the device parameter buffer on the worker's own stream, double-buffered so conversion and transfer
// overlap; host memory stays at two staging buffers per worker.
#pragma once

#include <vector>

#include "io/streaming_loader.h"
#include "ops/cuda/cuda_check.h"

namespace moetune::cuda {

class GpuBf16Sink final : public TensorSink {
 public:
  // device_params: the bf16 parameter buffer (layout.total_floats() elements).
  explicit GpuBf16Sink(bf16* device_params);
  ~GpuBf16Sink() override;
  GpuBf16Sink(const GpuBf16Sink&) = delete;
  GpuBf16Sink& operator=(const GpuBf16Sink&) = delete;

  void begin(int workers) override;
  void write(const HfTensor& dest, const TensorEntry& src, int worker) override;
  void end() override;

 private:
  struct Worker {
    cudaStream_t stream = nullptr;
    bf16* staging[2] = {nullptr, nullptr};  // pinned, kStagingElements each
    cudaEvent_t copied[2] = {nullptr, nullptr};
    int next = 0;
  };
  void release();

  bf16* device_params_;
  std::vector<Worker> workers_;
};

// Loads a Hugging Face checkpoint folder straight into a bf16 device buffer laid out by `layout`.
LoadReport load_hf_weights_to_gpu(const std::string& folder, const ModelConfig& config, const ParamLayout& layout,
                                  bf16* device_params, const LoadOptions& options = {});

}  // namespace moetune::cuda
