// Why: the attention biases of Qwen2-MoE (and optionally Qwen3-MoE and OLMoE) run as a cuBLAS GEMM followed by
// bias_add, and their gradient as bias_grad; together they must be the CPU twin's nn.Linear with bias
// (ops/cpu/linear.h) on bf16-rounded inputs. Shapes: the engine's widths and odd ones, row counts from 1 to enough
// rows for hundreds of reduction chunks. Tolerances: the forward rounds twice (GEMM output, then the sum: kBf16Chain);
// the bias gradient is an fp32 sum rounded once into a bf16 gradient that already held a value (kBf16RoundTrip,
// norm-wise). The gradient is reduced without atomics, so two runs must agree bit for bit.
#include <gtest/gtest.h>

#include "cuda_test_util.h"
#include "ops/cpu/linear.h"
#include "ops/cuda/bias.h"
#include "ops/cuda/gemm.h"

namespace moetune::testing {
namespace {

struct Shape {
  int rows, in_dim, out_dim;
};
const Shape kShapes[] = {{1, 8, 1}, {7, 16, 5}, {33, 64, 96}, {300, 32, 300}, {20000, 16, 48}};

TEST(CudaBias, LinearWithBiasMatchesCpu) {
  SKIP_WITHOUT_GPU();
  cuda::Gemm gemm(nullptr);
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << "rows " << s.rows << ", in " << s.in_dim << ", out " << s.out_dim);
    const std::vector<float> x = round_to_bf16(random_floats(size_t(s.rows) * s.in_dim, 1)),
                             w = round_to_bf16(random_floats(size_t(s.out_dim) * s.in_dim, 2, 0.2f)),
                             bias = round_to_bf16(random_floats(s.out_dim, 3));
    std::vector<float> out(size_t(s.rows) * s.out_dim);
    cpu::linear_forward(out.data(), x.data(), w.data(), bias.data(), s.rows, s.in_dim, s.out_dim);

    auto x_d = to_device_bf16(x), w_d = to_device_bf16(w), bias_d = to_device_bf16(bias);
    cuda::DeviceBuffer<cuda::bf16> out_d(out.size());
    gemm.linear_forward(out_d.data(), x_d.data(), w_d.data(), s.rows, s.in_dim, s.out_dim);
    cuda::bias_add(out_d.data(), bias_d.data(), s.rows, s.out_dim, nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    EXPECT_LT(relative_norm_error(to_host_f32(out_d), out), kBf16Chain);
  }
}

// bias_add on its own is exact up to the one rounding of an fp32 sum of two bf16 values.
TEST(CudaBias, BiasAddIsTheRoundedSum) {
  SKIP_WITHOUT_GPU();
  const int rows = 37, cols = 300;
  const std::vector<float> x = round_to_bf16(random_floats(size_t(rows) * cols, 4)),
                           bias = round_to_bf16(random_floats(cols, 5));
  std::vector<float> expected(x.size());
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) expected[size_t(r) * cols + c] = x[size_t(r) * cols + c] + bias[c];
  auto x_d = to_device_bf16(x), bias_d = to_device_bf16(bias);
  cuda::bias_add(x_d.data(), bias_d.data(), rows, cols, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_EQ(first_difference(to_host_f32(x_d), round_to_bf16(expected)), -1);
}

TEST(CudaBias, GradientMatchesCpuAndIsDeterministic) {
  SKIP_WITHOUT_GPU();
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << "rows " << s.rows << ", cols " << s.out_dim);
    const std::vector<float> x = round_to_bf16(random_floats(size_t(s.rows) * s.in_dim, 6)),
                             w = round_to_bf16(random_floats(size_t(s.out_dim) * s.in_dim, 7)),
                             d_out = round_to_bf16(random_floats(size_t(s.rows) * s.out_dim, 8)),
                             start = round_to_bf16(random_floats(s.out_dim, 9));  // the gradient accumulates
    std::vector<float> d_weight(w.size()), d_bias = start;
    cpu::linear_backward(nullptr, d_weight.data(), d_bias.data(), d_out.data(), x.data(), w.data(), s.rows, s.in_dim,
                         s.out_dim);

    auto d_out_d = to_device_bf16(d_out), first = to_device_bf16(start), second = to_device_bf16(start);
    cuda::DeviceBuffer<float> scratch(cuda::bias_grad_scratch_floats(s.rows, s.out_dim));
    cuda::bias_grad(first.data(), d_out_d.data(), s.rows, s.out_dim, scratch.data(), nullptr);
    cuda::bias_grad(second.data(), d_out_d.data(), s.rows, s.out_dim, scratch.data(), nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    EXPECT_LT(relative_norm_error(to_host_f32(first), d_bias), kBf16RoundTrip);
    EXPECT_EQ(first_difference(to_host_f32(first), to_host_f32(second)), -1);
  }
}

}  // namespace
}  // namespace moetune::testing
