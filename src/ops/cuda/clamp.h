// Why: the GPU twin of ops/cpu/clamp.h: OLMoE's clip_qkv on the bf16 q, k and v projections, and its gradient (zero
// where the forward input lay outside [-limit, limit]; the bounds themselves pass, as in PyTorch).
#pragma once

#include <cstddef>

#include "ops/cuda/cuda_check.h"

namespace moetune::cuda {

// out (count) = min(max(in, -limit), limit), compared in fp32 and stored in bf16. out may alias in. limit > 0.
void clamp_forward(bf16* out, const bf16* in, size_t count, float limit, cudaStream_t stream);

// d (count) in place: zeroed where in < -limit or in > limit; in (count) is the forward input.
void clamp_backward(bf16* d, const bf16* in, size_t count, float limit, cudaStream_t stream);

}  // namespace moetune::cuda
