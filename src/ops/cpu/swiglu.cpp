// Why: see swiglu.h. silu(g) = g * sigmoid(g); d silu/dg = s * (1 + g * (1 - s)).
#include "ops/cpu/swiglu.h"

#include <cmath>

namespace moetune::cpu {

void swiglu_forward(float* act, const float* gate_up, int rows, int intermediate) {
  for (long r = 0; r < rows; ++r) {
    const float* gate = gate_up + r * 2 * intermediate;
    const float* up = gate + intermediate;
    for (int i = 0; i < intermediate; ++i) {
      const float sigmoid = 1.0f / (1.0f + std::exp(-gate[i]));
      act[r * intermediate + i] = gate[i] * sigmoid * up[i];
    }
  }
}

void swiglu_backward(float* d_gate_up, const float* d_act, const float* gate_up, int rows, int intermediate) {
  for (long r = 0; r < rows; ++r) {
    const float* gate = gate_up + r * 2 * intermediate;
    const float* up = gate + intermediate;
    float* d_gate = d_gate_up + r * 2 * intermediate;
    float* d_up = d_gate + intermediate;
    for (int i = 0; i < intermediate; ++i) {
      const float sigmoid = 1.0f / (1.0f + std::exp(-gate[i]));
      const float silu = gate[i] * sigmoid;
      const float dy = d_act[r * intermediate + i];
      d_up[i] = dy * silu;
      d_gate[i] = dy * up[i] * sigmoid * (1.0f + gate[i] * (1.0f - sigmoid));
    }
  }
}

}  // namespace moetune::cpu
