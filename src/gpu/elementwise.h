// Why: the small glue kernels of the GPU engine that are not ops of the model (residual adds, dtype conversions,
// gradient accumulation into the bf16 gradient arena).
#pragma once

#include <cstddef>

#include "ops/cuda/cuda_check.h"

namespace moetune::cuda {

// out = a + b (bf16, fp32 math). out may alias a or b.
void add_bf16(bf16* out, const bf16* a, const bf16* b, size_t count, cudaStream_t stream);
// out (bf16) += in (fp32).
void accumulate_f32_into_bf16(bf16* out, const float* in, size_t count, cudaStream_t stream);
// out (bf16) = in (fp32).
void convert_f32_to_bf16(bf16* out, const float* in, size_t count, cudaStream_t stream);
// out (fp32) = in (bf16).
void convert_bf16_to_f32(float* out, const bf16* in, size_t count, cudaStream_t stream);

}  // namespace moetune::cuda
