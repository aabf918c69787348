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

void swiglu_backward_routed(float* d_gate_up, float* d_top_weight, float* act_weighted, const float* d_act,
                            const float* gate_up, const float* top_weight, const int32_t* row_token,
                            const int32_t* row_slot, long rows, int intermediate, int top_k) {
  for (long r = 0; r < rows; ++r) {
    const long pick = static_cast<long>(row_token[r]) * top_k + row_slot[r];
    const float weight = top_weight[pick];
    const float* gate = gate_up + r * 2 * intermediate;
    const float* up = gate + intermediate;
    float* d_gate = d_gate_up + r * 2 * intermediate;
    float* d_up = d_gate + intermediate;
    float d_weight = 0.0f;
    for (int i = 0; i < intermediate; ++i) {
      const float sigmoid = 1.0f / (1.0f + std::exp(-gate[i]));
      const float silu = gate[i] * sigmoid;
      const float act = silu * up[i];
      const float dy = d_act[r * intermediate + i];
      d_weight += dy * act;
      act_weighted[r * intermediate + i] = weight * act;
      d_up[i] = weight * dy * silu;
      d_gate[i] = weight * dy * up[i] * sigmoid * (1.0f + gate[i] * (1.0f - sigmoid));
    }
    d_top_weight[pick] = d_weight;
  }
}

}  // namespace moetune::cpu
