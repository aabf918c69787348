// Why: every projection of the model (attention, router, experts, LM head) is y = x W^T (+ b) with W stored (out, in)
// as in PyTorch's nn.Linear. The CPU reference runs them through BLAS (fp32).
#pragma once

namespace moetune::cpu {

// out (rows, out_dim) = in (rows, in_dim) · weight (out_dim, in_dim)^T + bias (out_dim, optional); beta: 0 overwrites
// out, 1 adds to it.
void linear_forward(float* out, const float* in, const float* weight, const float* bias, int rows, int in_dim, int out_dim,
                    float beta = 0.0f);

// Gradients of linear_forward. d_in (rows, in_dim): overwritten (accumulate = false) or added to; may be null.
// d_weight (out_dim, in_dim) and d_bias (out_dim, may be null) are always accumulated (+=), as parameter gradients are.
void linear_backward(float* d_in, float* d_weight, float* d_bias, const float* d_out, const float* in, const float* weight,
                     int rows, int in_dim, int out_dim, bool accumulate_d_in = false);

}  // namespace moetune::cpu
