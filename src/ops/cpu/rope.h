// Why: rotary position embedding in Transformers' "rotate_half" convention: for a head vector x of size D with halves
// (x1, x2), out = x * cos + (-x2, x1) * sin, with angle(pos, i) = pos * theta^(-2i/D) for i in [0, D/2) used for both
// halves. The backward pass is the rotation by the opposite angle.
#pragma once

#include <cstdint>

namespace moetune::cpu {

// In place on x (tokens, heads, head_dim); positions (tokens). inverse = true applies the backward (transposed) rotation.
void rope_apply(float* x, const int32_t* positions, int tokens, int heads, int head_dim, double theta, bool inverse);

}  // namespace moetune::cpu
