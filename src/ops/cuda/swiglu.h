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

}  // namespace moetune::cuda
