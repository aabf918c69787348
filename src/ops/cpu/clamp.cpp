// Why: see clamp.h.
#include "ops/cpu/clamp.h"

#include <algorithm>

namespace moetune::cpu {

void clamp_forward(float* out, const float* in, long count, float limit) {
  for (long i = 0; i < count; ++i) out[i] = std::clamp(in[i], -limit, limit);
}

void clamp_backward(float* d, const float* in, long count, float limit) {
  for (long i = 0; i < count; ++i)
    if (in[i] < -limit || in[i] > limit) d[i] = 0.0f;
}

}  // namespace moetune::cpu
