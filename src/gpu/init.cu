// Why: random initialisation of large models directly on the GPU (a 30B-parameter model would take minutes to
// initialise on the host and twice its size in host memory). Counter-based: element i of a seed always gets the same
// value, whatever the launch configuration.
#include <cstdint>

#include "gpu/gpu_trainer.h"

namespace moetune::cuda {

namespace {

__device__ uint64_t mix(uint64_t x) {  // splitmix64 finaliser
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

__global__ void normal_kernel(bf16* data, size_t count, float std, uint64_t seed) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count; i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const uint64_t bits = mix(seed * 0x100000001b3ull ^ i);
    const float u1 = (static_cast<float>(bits >> 40) + 0.5f) * (1.0f / 16777216.0f);
    const float u2 = static_cast<float>((bits >> 16) & 0xffffff) * (1.0f / 16777216.0f);
    data[i] = __float2bfloat16(std * sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2));
  }
}

__global__ void fill_kernel(bf16* data, size_t count, float value) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count; i += static_cast<size_t>(gridDim.x) * blockDim.x)
    data[i] = __float2bfloat16(value);
}

}  // namespace

void init_normal(bf16* data, size_t count, float std, uint64_t seed, cudaStream_t stream) {
  if (count == 0) return;
  normal_kernel<<<2048, 256, 0, stream>>>(data, count, std, seed);
  CUDA_CHECK_LAUNCH("normal_kernel");
}

void fill_bf16(bf16* data, size_t count, float value, cudaStream_t stream) {
  if (count == 0) return;
  fill_kernel<<<2048, 256, 0, stream>>>(data, count, value);
  CUDA_CHECK_LAUNCH("fill_kernel");
}

}  // namespace moetune::cuda
