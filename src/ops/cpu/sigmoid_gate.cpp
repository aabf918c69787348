// Why: see sigmoid_gate.h. sigmoid'(z) = sigmoid(z) * (1 - sigmoid(z)).
#include "ops/cpu/sigmoid_gate.h"

#include <cmath>

namespace moetune::cpu {

namespace {
float sigmoid(float z) { return 1.0f / (1.0f + std::exp(-z)); }
}  // namespace

void sigmoid_gate_forward(float* out, const float* x, const float* logit, int tokens, int hidden) {
  for (long t = 0; t < tokens; ++t) {
    const float gate = sigmoid(logit[t]);
    for (int h = 0; h < hidden; ++h) out[t * hidden + h] += gate * x[t * hidden + h];
  }
}

void sigmoid_gate_backward(float* d_x, float* d_logit, const float* d_out, const float* x, const float* logit, int tokens,
                           int hidden) {
  for (long t = 0; t < tokens; ++t) {
    const float gate = sigmoid(logit[t]);
    double dot = 0.0;
    for (int h = 0; h < hidden; ++h) {
      d_x[t * hidden + h] = gate * d_out[t * hidden + h];
      dot += static_cast<double>(d_out[t * hidden + h]) * x[t * hidden + h];
    }
    d_logit[t] = static_cast<float>(dot * gate * (1.0f - gate));
  }
}

}  // namespace moetune::cpu
