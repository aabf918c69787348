// Why: RMSNorm as Transformers computes it in fp32: y = weight * (x * rsqrt(mean(x^2) + eps)). Used for the layer norms,
// the final norm, and q/k norms (per head: rows = tokens*heads, cols = head_dim; full width: cols = heads*head_dim).
#pragma once

namespace moetune::cpu {

// out (rows, cols), rstd (rows) saved for the backward pass, in (rows, cols), weight (cols). out may alias in.
void rmsnorm_forward(float* out, float* rstd, const float* in, const float* weight, int rows, int cols, float eps);

// d_in (rows, cols) overwritten; d_weight (cols) accumulated. `in` is the forward input. d_in may alias d_out.
void rmsnorm_backward(float* d_in, float* d_weight, const float* d_out, const float* in, const float* weight,
                      const float* rstd, int rows, int cols);

}  // namespace moetune::cpu
