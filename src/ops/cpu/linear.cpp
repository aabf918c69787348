// Why: see linear.h. Row-major BLAS calls; the bias is added after the GEMM.
#include "ops/cpu/linear.h"

#include <cblas.h>

namespace moetune::cpu {

void linear_forward(float* out, const float* in, const float* weight, const float* bias, int rows, int in_dim, int out_dim,
                    float beta) {
  if (rows == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out_dim, in_dim, 1.0f, in, in_dim, weight, in_dim, beta, out,
              out_dim);
  if (bias)
    for (int r = 0; r < rows; ++r)
      for (int o = 0; o < out_dim; ++o) out[static_cast<long>(r) * out_dim + o] += bias[o];
}

void linear_backward(float* d_in, float* d_weight, float* d_bias, const float* d_out, const float* in, const float* weight,
                     int rows, int in_dim, int out_dim, bool accumulate_d_in) {
  if (rows == 0) return;
  if (d_in)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, in_dim, out_dim, 1.0f, d_out, out_dim, weight, in_dim,
                accumulate_d_in ? 1.0f : 0.0f, d_in, in_dim);
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out_dim, in_dim, rows, 1.0f, d_out, out_dim, in, in_dim, 1.0f,
              d_weight, in_dim);
  if (d_bias)
    for (int r = 0; r < rows; ++r)
      for (int o = 0; o < out_dim; ++o) d_bias[o] += d_out[static_cast<long>(r) * out_dim + o];
}

}  // namespace moetune::cpu
