// Why: see elementwise.h. Grid-stride loops; fp32 arithmetic.
#include "gpu/elementwise.h"

namespace moetune::cuda {

namespace {

constexpr int kThreads = 256;
int blocks_for(size_t count) {
  const size_t blocks = (count + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < 65535 * 8 ? (blocks == 0 ? 1 : blocks) : 65535 * 8);
}

__global__ void add_kernel(bf16* out, const bf16* a, const bf16* b, size_t count) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count; i += static_cast<size_t>(gridDim.x) * blockDim.x)
    out[i] = __float2bfloat16(__bfloat162float(a[i]) + __bfloat162float(b[i]));
}

__global__ void accumulate_kernel(bf16* out, const float* in, size_t count) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count; i += static_cast<size_t>(gridDim.x) * blockDim.x)
    out[i] = __float2bfloat16(__bfloat162float(out[i]) + in[i]);
}

__global__ void to_bf16_kernel(bf16* out, const float* in, size_t count) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count; i += static_cast<size_t>(gridDim.x) * blockDim.x)
    out[i] = __float2bfloat16(in[i]);
}

__global__ void to_f32_kernel(float* out, const bf16* in, size_t count) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count; i += static_cast<size_t>(gridDim.x) * blockDim.x)
    out[i] = __bfloat162float(in[i]);
}

}  // namespace

void add_bf16(bf16* out, const bf16* a, const bf16* b, size_t count, cudaStream_t stream) {
  add_kernel<<<blocks_for(count), kThreads, 0, stream>>>(out, a, b, count);
  CUDA_CHECK_LAUNCH("add_kernel");
}

void accumulate_f32_into_bf16(bf16* out, const float* in, size_t count, cudaStream_t stream) {
  accumulate_kernel<<<blocks_for(count), kThreads, 0, stream>>>(out, in, count);
  CUDA_CHECK_LAUNCH("accumulate_kernel");
}

void convert_f32_to_bf16(bf16* out, const float* in, size_t count, cudaStream_t stream) {
  to_bf16_kernel<<<blocks_for(count), kThreads, 0, stream>>>(out, in, count);
  CUDA_CHECK_LAUNCH("to_bf16_kernel");
}

void convert_bf16_to_f32(float* out, const bf16* in, size_t count, cudaStream_t stream) {
  to_f32_kernel<<<blocks_for(count), kThreads, 0, stream>>>(out, in, count);
  CUDA_CHECK_LAUNCH("to_f32_kernel");
}

}  // namespace moetune::cuda
