// Why: the GPU twin of ops/cpu/rope.h (Transformers' "rotate_half" convention): for a head vector x of size D with
// halves (x1, x2), out = x * cos + (-x2, x1) * sin, angle(pos, i) = pos * theta^(-2i/D) for i in [0, D/2). The inverse
// flag applies the transposed rotation (the backward pass). The frequencies are formed on the host with the same fp32
// expression as the CPU twin (bit-identical), the angle inv_freq * pos in fp32 on the device.
#pragma once

#include <cstdint>

#include "ops/cuda/cuda_check.h"

namespace moetune::cuda {

// Largest head_dim supported (the frequency table travels in the kernel's parameters).
constexpr int kRopeMaxHeadDim = 512;

// In place on x (tokens, heads, head_dim) bf16; positions (tokens) on the device. head_dim in [2, kRopeMaxHeadDim];
// an odd head_dim leaves its last element untouched, as the CPU twin does.
void rope_apply(bf16* x, const int32_t* positions, int tokens, int heads, int head_dim, double theta, bool inverse,
                cudaStream_t stream);

}  // namespace moetune::cuda
