// Why: see adamw.h. Arithmetic in the order PyTorch's _single_tensor_adamw uses, so fp32 results match it closely.
#include "ops/cpu/adamw.h"

#include <cmath>

namespace moetune::cpu {

void adamw_update(float* params, const float* grads, float* exp_avg, float* exp_avg_sq, size_t count, const AdamWHyper& h,
                  bool weight_decay_on) {
  const float decay = weight_decay_on ? static_cast<float>(1.0 - h.lr * h.weight_decay) : 1.0f;
  // PyTorch forms 1 - beta from the Python double and rounds once; doing it in fp32 from a rounded beta is ~1e-5 off.
  const float b2 = static_cast<float>(h.beta2);
  const float one_minus_b1 = static_cast<float>(1.0 - h.beta1), one_minus_b2 = static_cast<float>(1.0 - h.beta2);
  const double bias_correction1 = 1.0 - std::pow(h.beta1, static_cast<double>(h.step));
  const double bias_correction2 = 1.0 - std::pow(h.beta2, static_cast<double>(h.step));
  const float step_size = static_cast<float>(h.lr / bias_correction1);
  const float bias_correction2_sqrt = static_cast<float>(std::sqrt(bias_correction2));
  const float eps = static_cast<float>(h.eps);
  for (size_t i = 0; i < count; ++i) {
    const float g = grads[i];
    params[i] *= decay;
    exp_avg[i] += (g - exp_avg[i]) * one_minus_b1;
    exp_avg_sq[i] = exp_avg_sq[i] * b2 + one_minus_b2 * g * g;
    const float denom = std::sqrt(exp_avg_sq[i]) / bias_correction2_sqrt + eps;
    params[i] -= step_size * exp_avg[i] / denom;
  }
}

double grad_norm_squared(const float* grads, size_t count) {
  double sum = 0.0;
  for (size_t i = 0; i < count; ++i) sum += static_cast<double>(grads[i]) * grads[i];
  return sum;
}

void scale_in_place(float* values, size_t count, float factor) {
  for (size_t i = 0; i < count; ++i) values[i] *= factor;
}

}  // namespace moetune::cpu
