// Why: the GPU twin of ops/cpu/sigmoid_gate.h: Qwen2-MoE's shared expert joins the routed experts' output scaled by a
// per-token sigmoid gate, out += sigmoid(z) * s. The gate's logit z (N) stays fp32 (as the router's logits do); the
// gradient's per-token dot product is an fp32 block reduction in a fixed order (no atomics: bitwise deterministic).
#pragma once

#include "ops/cuda/cuda_check.h"

namespace moetune::cuda {

// out (N, H) += sigmoid(logit[t]) * x[t]; x (N, H) bf16, logit (N) fp32. fp32 math, one rounding.
void sigmoid_gate_forward(bf16* out, const bf16* x, const float* logit, int tokens, int hidden, cudaStream_t stream);

// d_x (N, H) overwritten: sigmoid(logit[t]) * d_out[t]; d_logit (N) overwritten: sigmoid'(logit[t]) * <d_out[t], x[t]>,
// in bf16 (it feeds the gate's GEMMs). x and logit are the forward inputs; d_x must not alias d_out or x.
void sigmoid_gate_backward(bf16* d_x, bf16* d_logit, const bf16* d_out, const bf16* x, const float* logit, int tokens,
                           int hidden, cudaStream_t stream);

}  // namespace moetune::cuda
