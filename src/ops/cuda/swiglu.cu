// Why: see swiglu.h. One block per row (no index division per element); consecutive threads read consecutive gate
// and up elements, so every access is coalesced. sigmoid uses the accurate expf (not __expf), in the CPU twin's order.
#include "ops/cuda/swiglu.h"

namespace moetune::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void swiglu_forward_kernel(bf16* act, const bf16* gate_up, int intermediate) {
  const bf16* gate = gate_up + static_cast<size_t>(blockIdx.x) * 2 * intermediate;
  const bf16* up = gate + intermediate;
  bf16* out = act + static_cast<size_t>(blockIdx.x) * intermediate;
  for (int i = threadIdx.x; i < intermediate; i += blockDim.x) {
    const float g = __bfloat162float(gate[i]), u = __bfloat162float(up[i]);
    const float sigmoid = 1.0f / (1.0f + expf(-g));
    out[i] = __float2bfloat16(g * sigmoid * u);
  }
}

__global__ void swiglu_backward_kernel(bf16* d_gate_up, const bf16* d_act, const bf16* gate_up, int intermediate) {
  const size_t row_offset = static_cast<size_t>(blockIdx.x) * 2 * intermediate;
  const bf16* gate = gate_up + row_offset;
  const bf16* up = gate + intermediate;
  bf16* d_gate = d_gate_up + row_offset;
  bf16* d_up = d_gate + intermediate;
  const bf16* dy_row = d_act + static_cast<size_t>(blockIdx.x) * intermediate;
  for (int i = threadIdx.x; i < intermediate; i += blockDim.x) {
    const float g = __bfloat162float(gate[i]), u = __bfloat162float(up[i]), dy = __bfloat162float(dy_row[i]);
    const float sigmoid = 1.0f / (1.0f + expf(-g));
    const float silu = g * sigmoid;
    d_up[i] = __float2bfloat16(dy * silu);
    d_gate[i] = __float2bfloat16(dy * u * sigmoid * (1.0f + g * (1.0f - sigmoid)));
  }
}

// One block per routed row, as swiglu_backward_kernel, plus the row's dot product of d_act and act: each thread sums
// its strided elements, then the warps (shuffles) and the block (shared memory) in a fixed order. The block is whole
// warps, at most kThreads (threads_for).
__global__ void swiglu_backward_routed_kernel(bf16* d_gate_up, float* d_top_weight, bf16* act_weighted,
                                              const bf16* d_act, const bf16* gate_up, const float* top_weight,
                                              const int32_t* row_token, const int32_t* row_slot, int intermediate,
                                              int top_k) {
  const size_t row = blockIdx.x;
  const long pick = static_cast<long>(row_token[row]) * top_k + row_slot[row];
  const float weight = top_weight[pick];
  const bf16* gate = gate_up + row * 2 * intermediate;
  const bf16* up = gate + intermediate;
  bf16* d_gate = d_gate_up + row * 2 * intermediate;
  bf16* d_up = d_gate + intermediate;
  const bf16* dy_row = d_act + row * intermediate;
  bf16* act_row = act_weighted + row * intermediate;
  float d_weight = 0.0f;
  for (int i = threadIdx.x; i < intermediate; i += blockDim.x) {
    const float g = __bfloat162float(gate[i]), u = __bfloat162float(up[i]), dy = __bfloat162float(dy_row[i]);
    const float sigmoid = 1.0f / (1.0f + expf(-g));
    const float silu = g * sigmoid;
    const float act = silu * u;
    d_weight += dy * act;
    act_row[i] = __float2bfloat16(weight * act);
    const float weighted_dy = weight * dy;
    d_up[i] = __float2bfloat16(weighted_dy * silu);
    d_gate[i] = __float2bfloat16(weighted_dy * u * sigmoid * (1.0f + g * (1.0f - sigmoid)));
  }
  for (int offset = 16; offset > 0; offset /= 2) d_weight += __shfl_down_sync(0xffffffffu, d_weight, offset);
  __shared__ float warp_sums[kThreads / 32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_sums[warp] = d_weight;
  __syncthreads();
  if (threadIdx.x == 0) {
    float sum = 0.0f;
    for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) sum += warp_sums[w];
    d_top_weight[pick] = sum;
  }
}

// Fewer threads for narrow rows, so a block is not mostly idle.
int threads_for(int intermediate) { return intermediate >= kThreads ? kThreads : ((intermediate + 31) / 32) * 32; }

}  // namespace

void swiglu_forward(bf16* act, const bf16* gate_up, int rows, int intermediate, cudaStream_t stream) {
  if (rows <= 0 || intermediate <= 0) return;
  swiglu_forward_kernel<<<rows, threads_for(intermediate), 0, stream>>>(act, gate_up, intermediate);
  CUDA_CHECK_LAUNCH("swiglu_forward_kernel");
}

void swiglu_backward(bf16* d_gate_up, const bf16* d_act, const bf16* gate_up, int rows, int intermediate,
                     cudaStream_t stream) {
  if (rows <= 0 || intermediate <= 0) return;
  swiglu_backward_kernel<<<rows, threads_for(intermediate), 0, stream>>>(d_gate_up, d_act, gate_up, intermediate);
  CUDA_CHECK_LAUNCH("swiglu_backward_kernel");
}

void swiglu_backward_routed(bf16* d_gate_up, float* d_top_weight, bf16* act_weighted, const bf16* d_act,
                            const bf16* gate_up, const float* top_weight, const int32_t* row_token,
                            const int32_t* row_slot, long rows, int intermediate, int top_k, cudaStream_t stream) {
  if (rows <= 0 || intermediate <= 0) return;
  swiglu_backward_routed_kernel<<<static_cast<unsigned>(rows), threads_for(intermediate), 0, stream>>>(
      d_gate_up, d_top_weight, act_weighted, d_act, gate_up, top_weight, row_token, row_slot, intermediate, top_k);
  CUDA_CHECK_LAUNCH("swiglu_backward_routed_kernel");
}

}  // namespace moetune::cuda
