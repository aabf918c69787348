// Why: see sigmoid_gate.h. One block per token; consecutive threads on consecutive elements. The backward's dot product
// is a warp-shuffle tree plus a fixed-order sum over warps. sigmoid uses the accurate expf, as the CPU twin does.
#include "ops/cuda/sigmoid_gate.h"

namespace moetune::cuda {
namespace {

constexpr int kMaxThreads = 256;
int threads_for(int hidden) { return hidden >= kMaxThreads ? kMaxThreads : ((hidden + 31) / 32) * 32; }

__device__ __forceinline__ float sigmoid(float z) { return 1.0f / (1.0f + expf(-z)); }

__global__ void sigmoid_gate_forward_kernel(bf16* out, const bf16* x, const float* logit, int hidden) {
  const size_t base = static_cast<size_t>(blockIdx.x) * hidden;
  const float gate = sigmoid(logit[blockIdx.x]);
  for (int h = threadIdx.x; h < hidden; h += blockDim.x)
    out[base + h] = __float2bfloat16(__bfloat162float(out[base + h]) + gate * __bfloat162float(x[base + h]));
}

// blockDim.x: a multiple of 32, at most kMaxThreads.
__global__ void sigmoid_gate_backward_kernel(bf16* d_x, bf16* d_logit, const bf16* d_out, const bf16* x,
                                             const float* logit, int hidden) {
  __shared__ float warp_sums[kMaxThreads / 32];
  const size_t base = static_cast<size_t>(blockIdx.x) * hidden;
  const float gate = sigmoid(logit[blockIdx.x]);
  float dot = 0.0f;
  for (int h = threadIdx.x; h < hidden; h += blockDim.x) {
    const float dy = __bfloat162float(d_out[base + h]);
    d_x[base + h] = __float2bfloat16(gate * dy);
    dot += dy * __bfloat162float(x[base + h]);
  }
  for (int offset = 16; offset > 0; offset >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, offset);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_sums[warp] = dot;
  __syncthreads();
  if (threadIdx.x == 0) {
    float sum = 0.0f;
    for (int w = 0; w < static_cast<int>(blockDim.x >> 5); ++w) sum += warp_sums[w];
    d_logit[blockIdx.x] = __float2bfloat16(sum * gate * (1.0f - gate));
  }
}

}  // namespace

void sigmoid_gate_forward(bf16* out, const bf16* x, const float* logit, int tokens, int hidden, cudaStream_t stream) {
  if (tokens <= 0 || hidden <= 0) return;
  sigmoid_gate_forward_kernel<<<tokens, threads_for(hidden), 0, stream>>>(out, x, logit, hidden);
  CUDA_CHECK_LAUNCH("sigmoid_gate_forward_kernel");
}

void sigmoid_gate_backward(bf16* d_x, bf16* d_logit, const bf16* d_out, const bf16* x, const float* logit, int tokens,
                           int hidden, cudaStream_t stream) {
  if (tokens <= 0 || hidden <= 0) return;
  sigmoid_gate_backward_kernel<<<tokens, threads_for(hidden), 0, stream>>>(d_x, d_logit, d_out, x, logit, hidden);
  CUDA_CHECK_LAUNCH("sigmoid_gate_backward_kernel");
}

}  // namespace moetune::cuda
