// Why: the GPU twin of the bias terms of ops/cpu/linear.h (q/k/v biases of Qwen2-MoE, optional q/k/v/o biases of
// Qwen3-MoE and OLMoE): cuBLAS computes x W^T, these add the bias and reduce its gradient. The gradient is a sum over
// rows, reduced without atomics (partial sums over fixed row chunks, then a fixed-order sum of the chunks), so the same
// inputs give the same bits on every run.
#pragma once

#include "ops/cuda/cuda_check.h"

namespace moetune::cuda {

// out (rows, cols) += bias (cols) on every row, in place; fp32 sum, one rounding.
void bias_add(bf16* out, const bf16* bias, int rows, int cols, cudaStream_t stream);

// Floats of scratch bias_grad needs: ceil(rows / chunk_rows) * cols, chunk_rows = max(32, ceil(rows / 512)).
size_t bias_grad_scratch_floats(int rows, int cols);

// d_bias (cols) += sum over rows of d_out (rows, cols), summed in fp32 and rounded once into the bf16 gradient.
// scratch: bias_grad_scratch_floats(rows, cols) floats, contents ignored and clobbered.
void bias_grad(bf16* d_bias, const bf16* d_out, int rows, int cols, float* scratch, cudaStream_t stream);

}  // namespace moetune::cuda
