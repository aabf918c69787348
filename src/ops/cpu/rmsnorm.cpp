// Why: see rmsnorm.h. Sums run in double so the reference is at least as accurate as PyTorch's fp32 reductions.
#include "ops/cpu/rmsnorm.h"

#include <cmath>

namespace moetune::cpu {

void rmsnorm_forward(float* out, float* rstd, const float* in, const float* weight, int rows, int cols, float eps) {
  for (int r = 0; r < rows; ++r) {
    const float* x = in + static_cast<long>(r) * cols;
    float* y = out + static_cast<long>(r) * cols;
    double sum_squares = 0.0;
    for (int c = 0; c < cols; ++c) sum_squares += static_cast<double>(x[c]) * x[c];
    const float inv = static_cast<float>(1.0 / std::sqrt(static_cast<float>(sum_squares / cols) + eps));
    rstd[r] = inv;
    for (int c = 0; c < cols; ++c) y[c] = weight[c] * (x[c] * inv);
  }
}

void rmsnorm_backward(float* d_in, float* d_weight, const float* d_out, const float* in, const float* weight,
                      const float* rstd, int rows, int cols) {
  for (int r = 0; r < rows; ++r) {
    const float* x = in + static_cast<long>(r) * cols;
    const float* dy = d_out + static_cast<long>(r) * cols;
    float* dx = d_in + static_cast<long>(r) * cols;
    const double inv = rstd[r];
    double dot = 0.0;  // sum_c dy_c * w_c * x_c
    for (int c = 0; c < cols; ++c) {
      dot += static_cast<double>(dy[c]) * weight[c] * x[c];
      d_weight[c] += dy[c] * static_cast<float>(x[c] * inv);
    }
    const double correction = dot * inv * inv * inv / cols;
    for (int c = 0; c < cols; ++c) dx[c] = static_cast<float>(dy[c] * weight[c] * inv - x[c] * correction);
  }
}

}  // namespace moetune::cpu
