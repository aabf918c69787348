// Why: the SwiGLU activation of every MLP and expert: act = silu(gate) * up, where gate and up are the two halves of
// one row of the stacked gate/up projection output (gate first), as Transformers' fused experts chunk them.
#pragma once

namespace moetune::cpu {

// act (rows, I) from gate_up (rows, 2*I).
void swiglu_forward(float* act, const float* gate_up, int rows, int intermediate);
// d_gate_up (rows, 2*I) overwritten from d_act (rows, I) and the forward input gate_up.
void swiglu_backward(float* d_gate_up, const float* d_act, const float* gate_up, int rows, int intermediate);

}  // namespace moetune::cpu
