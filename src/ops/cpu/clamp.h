// Why: OLMoE's clip_qkv clamps the q, k and v projections to [-limit, limit] before RoPE; the backward lets the gradient
// through only where the forward input lay inside the bounds (PyTorch's clamp rule: the bounds themselves pass).
#pragma once

namespace moetune::cpu {

// out (count) = min(max(in, -limit), limit). limit > 0.
void clamp_forward(float* out, const float* in, long count, float limit);
// d (count) in place: zeroed where in < -limit or in > limit; in is the forward input.
void clamp_backward(float* d, const float* in, long count, float limit);

}  // namespace moetune::cpu
