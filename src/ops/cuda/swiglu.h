// Why: the GPU twin of ops/cpu/swiglu.h, the activation of every MLP and expert: act = silu(gate) * up, where gate and
// up are the two halves of one row of the stacked gate/up projection output (gate first). bf16 in and out, fp32 math.
#pragma once

#include "ops/cuda/cuda_check.h"

namespace moetune::cuda {

// act (rows, I) from gate_up (rows, 2*I).
void swiglu_forward(bf16* act, const bf16* gate_up, int rows, int intermediate, cudaStream_t stream);

// d_gate_up (rows, 2*I) overwritten from d_act (rows, I) and the forward input gate_up (rows, 2*I):
// d_up = d_act * silu(g), d_gate = d_act * up * s * (1 + g * (1 - s)) with s = sigmoid(g).
void swiglu_backward(bf16* d_gate_up, const bf16* d_act, const bf16* gate_up, int rows, int intermediate,
                     cudaStream_t stream);

// The routed experts' SwiGLU backward when their outputs were not kept, with the routing weight folded in (the twin of
// cpu::swiglu_backward_routed, which has the math). d_act (rows, I) = d_out[t] W_down[e], the down projection's data
// gradient of the unweighted output gradient; gate_up (rows, 2I); top_weight (tokens, k) indexed through row_token,
// row_slot (rows). Overwrites d_gate_up (rows, 2I) and act_weighted (rows, I) in bf16, and d_top_weight (tokens, k) in
// fp32 at every routed (t, j). act and every product stay fp32 until their one rounding; the dot sums in a fixed order.
void swiglu_backward_routed(bf16* d_gate_up, float* d_top_weight, bf16* act_weighted, const bf16* d_act,
                            const bf16* gate_up, const float* top_weight, const int32_t* row_token,
                            const int32_t* row_slot, long rows, int intermediate, int top_k, cudaStream_t stream);

}  // namespace moetune::cuda
