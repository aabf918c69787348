// Why: see rope.h. One block per token: its threads first fill the token's cos/sin table (head_dim / 2 entries) in
// shared memory, then rotate the (x_i, x_{i+D/2}) pairs of all its heads, consecutive threads on consecutive i.
// Rotation math in fp32 with products rounded separately (no fused multiply-add), as the CPU twin computes it.
#include "ops/cuda/rope.h"

#include <cmath>

namespace moetune::cuda {
namespace {

constexpr int kThreads = 128;

struct InvFreq {
  float values[kRopeMaxHeadDim / 2];
};

__global__ void rope_kernel(bf16* x, const int32_t* positions, int heads, int head_dim, InvFreq inv_freq, bool inverse) {
  __shared__ float cos_table[kRopeMaxHeadDim / 2], sin_table[kRopeMaxHeadDim / 2];
  const int half = head_dim / 2;
  const float position = static_cast<float>(positions[blockIdx.x]);
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    const float angle = inv_freq.values[i] * position;
    float s, c;
    sincosf(angle, &s, &c);
    cos_table[i] = c;
    sin_table[i] = inverse ? -s : s;
  }
  __syncthreads();
  bf16* token = x + static_cast<size_t>(blockIdx.x) * heads * head_dim;
  for (int pair = threadIdx.x; pair < heads * half; pair += blockDim.x) {
    const int h = pair / half, i = pair - h * half;
    bf16* v = token + static_cast<size_t>(h) * head_dim;
    const float x1 = __bfloat162float(v[i]), x2 = __bfloat162float(v[i + half]);
    v[i] = __float2bfloat16(__fsub_rn(__fmul_rn(x1, cos_table[i]), __fmul_rn(x2, sin_table[i])));
    v[i + half] = __float2bfloat16(__fadd_rn(__fmul_rn(x2, cos_table[i]), __fmul_rn(x1, sin_table[i])));
  }
}

}  // namespace

void rope_apply(bf16* x, const int32_t* positions, int tokens, int heads, int head_dim, double theta, bool inverse,
                cudaStream_t stream) {
  MT_ASSERT(head_dim >= 0 && head_dim <= kRopeMaxHeadDim);
  if (tokens <= 0 || heads <= 0 || head_dim < 2) return;
  InvFreq inv_freq{};
  for (int i = 0; i < head_dim / 2; ++i) {  // the CPU twin's expression, evaluated on the host
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    inv_freq.values[i] = 1.0f / std::pow(static_cast<float>(theta), exponent);
  }
  rope_kernel<<<tokens, kThreads, 0, stream>>>(x, positions, heads, head_dim, inv_freq, inverse);
  CUDA_CHECK_LAUNCH("rope_kernel");
}

}  // namespace moetune::cuda
