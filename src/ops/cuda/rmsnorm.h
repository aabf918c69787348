// Why: the GPU twin of ops/cpu/rmsnorm.h: y = weight * (x * rsqrt(mean(x^2) + eps)) on bf16 activations with fp32 sums,
// used for the layer norms, the final norm and per-head q/k norms (rows = tokens*heads, cols = head_dim). The residual add
// that precedes every layer norm is fused into add_rmsnorm_forward (one read of both inputs instead of three passes).
// The weight gradient is a sum over rows; it is reduced without atomics (partial sums over fixed row chunks, then a
// fixed-order sum of the chunks), so the same inputs give the same bits on every run.
#pragma once

#include <cstddef>

#include "ops/cuda/cuda_check.h"

namespace moetune::cuda {

// out (rows, cols) bf16, rstd (rows) fp32 saved for the backward pass, in (rows, cols), weight (cols).
// out may alias in. cols in [1, 8192] (larger works too, with more work per thread).
void rmsnorm_forward(bf16* out, float* rstd, const bf16* in, const bf16* weight, int rows, int cols, float eps,
                     cudaStream_t stream);

// residual_out (rows, cols) = bf16(a + b), then normed (rows, cols) = RMSNorm(residual_out) computed from the rounded
// bf16 residual (exactly what the unfused add, then rmsnorm_forward, gives); rstd (rows) as above.
// residual_out may alias a or b (the in-place residual update); normed must not alias residual_out.
void add_rmsnorm_forward(bf16* residual_out, bf16* normed, float* rstd, const bf16* a, const bf16* b, const bf16* weight,
                         int rows, int cols, float eps, cudaStream_t stream);

// Floats of scratch rmsnorm_backward needs: ceil(rows / chunk_rows) * cols, where chunk_rows = max(32, ceil(rows / 512)),
// i.e. at most 512 * cols floats.
size_t rmsnorm_backward_scratch_floats(int rows, int cols);

// d_in (rows, cols) overwritten; d_weight (cols) fp32 accumulated (+=; the caller converts it to its parameter dtype).
// `in` is the forward input, rstd the forward's. d_in may alias d_out. scratch: rmsnorm_backward_scratch_floats(rows,
// cols) floats, contents ignored and clobbered. Deterministic: d_weight is summed over rows in a fixed order.
void rmsnorm_backward(bf16* d_in, float* d_weight, const bf16* d_out, const bf16* in, const bf16* weight,
                      const float* rstd, int rows, int cols, float* scratch, cudaStream_t stream);

}  // namespace moetune::cuda
