// Why: Qwen2-MoE adds its shared expert to the routed experts' output scaled by a per-token sigmoid gate:
// out += sigmoid(z) * s, where s (N, H) is the shared expert's output and z (N) = shared_expert_gate(x).
#pragma once

namespace moetune::cpu {

// out (N, H) += sigmoid(logit[t]) * x[t], x (N, H), logit (N).
void sigmoid_gate_forward(float* out, const float* x, const float* logit, int tokens, int hidden);
// d_x (N, H) overwritten: sigmoid(logit[t]) * d_out[t]; d_logit (N) overwritten: sigmoid'(logit[t]) * <d_out[t], x[t]>
// (the dot product in double). x and logit are the forward inputs.
void sigmoid_gate_backward(float* d_x, float* d_logit, const float* d_out, const float* x, const float* logit, int tokens,
                           int hidden);

}  // namespace moetune::cpu
