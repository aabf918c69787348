// Why: the optimizer step with PyTorch's torch.optim.AdamW semantics (single-tensor path), over one flat buffer:
//   p *= 1 - lr * wd                      (decoupled weight decay, only where decay applies)
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// plus the global gradient norm used for clipping (torch.nn.utils.clip_grad_norm_).
#pragma once

#include <cstddef>

namespace moetune::cpu {

struct AdamWHyper {
  double lr, beta1, beta2, eps, weight_decay;
  long step;  // 1-based step count after this update
};

// Updates `count` elements. weight_decay_on selects whether the decay term applies to this span.
void adamw_update(float* params, const float* grads, float* exp_avg, float* exp_avg_sq, size_t count, const AdamWHyper& h,
                  bool weight_decay_on);

// sum of g^2 over `count` elements, accumulated in double (the caller sums spans and takes the square root).
double grad_norm_squared(const float* grads, size_t count);

// grads *= factor.
void scale_in_place(float* values, size_t count, float factor);

}  // namespace moetune::cpu
