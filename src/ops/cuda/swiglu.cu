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

}  // namespace moetune::cuda
