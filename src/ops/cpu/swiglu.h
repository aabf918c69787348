// Why: the SwiGLU activation of every MLP and expert: act = silu(gate) * up, where gate and up are the two halves of
// one row of the stacked gate/up projection output (gate first), as Transformers' fused experts chunk them.
#pragma once

#include <cstdint>

namespace moetune::cpu {

// act (rows, I) from gate_up (rows, 2*I).
void swiglu_forward(float* act, const float* gate_up, int rows, int intermediate);
// d_gate_up (rows, 2*I) overwritten from d_act (rows, I) and the forward input gate_up.
void swiglu_backward(float* d_gate_up, const float* d_act, const float* gate_up, int rows, int intermediate);

// The routed experts' SwiGLU backward when their outputs were not kept (the CUDA engine without expert parallelism;
// this is its reference). The down projection's data gradient ran on the unweighted output gradient:
// d_act[r] = d_out[t] W_down[e] for routed row r of token t = row_token[r] in slot j = row_slot[r], whose routing
// weight is w = top_weight[t, j] (tokens, k). With act = swiglu_forward(gate_up):
//   d_gate_up[r] = swiglu_backward(gate_up[r], w d_act[r])   (rows, 2I) overwritten
//   d_top_weight[t, j] = dot(d_act[r], act[r])               (tokens, k) overwritten at every routed (t, j)
//   act_weighted[r] = w act[r]                               (rows, I) overwritten: the down weight gradient's input,
//                                                            d W_down[e] = sum over e's rows of d_out[t]^T act_weighted[r]
// dot(d_act[r], act[r]) = dot(d_out[t], W_down[e] act[r]) is the combine's routing-weight gradient, without the output.
void swiglu_backward_routed(float* d_gate_up, float* d_top_weight, float* act_weighted, const float* d_act,
                            const float* gate_up, const float* top_weight, const int32_t* row_token,
                            const int32_t* row_slot, long rows, int intermediate, int top_k);

}  // namespace moetune::cpu
