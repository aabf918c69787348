// Why: see clamp.h. Grid-stride loops, one element per thread per step.
#include "ops/cuda/clamp.h"

namespace moetune::cuda {
namespace {

constexpr int kThreads = 256;
int blocks_for(size_t count) {
  const size_t blocks = (count + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < 65535 * 8 ? blocks : 65535 * 8);
}

__global__ void clamp_forward_kernel(bf16* out, const bf16* in, size_t count, float limit) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count; i += static_cast<size_t>(gridDim.x) * blockDim.x)
    out[i] = __float2bfloat16(fminf(fmaxf(__bfloat162float(in[i]), -limit), limit));
}

__global__ void clamp_backward_kernel(bf16* d, const bf16* in, size_t count, float limit) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count; i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const float x = __bfloat162float(in[i]);
    if (x < -limit || x > limit) d[i] = __float2bfloat16(0.0f);
  }
}

}  // namespace

void clamp_forward(bf16* out, const bf16* in, size_t count, float limit, cudaStream_t stream) {
  if (count == 0) return;
  clamp_forward_kernel<<<blocks_for(count), kThreads, 0, stream>>>(out, in, count, limit);
  CUDA_CHECK_LAUNCH("clamp_forward_kernel");
}

void clamp_backward(bf16* d, const bf16* in, size_t count, float limit, cudaStream_t stream) {
  if (count == 0) return;
  clamp_backward_kernel<<<blocks_for(count), kThreads, 0, stream>>>(d, in, count, limit);
  CUDA_CHECK_LAUNCH("clamp_backward_kernel");
}

}  // namespace moetune::cuda
