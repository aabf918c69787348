// Why: the GPU products (dense and grouped, forward and backward) against the CPU twin ops/cpu/linear on bf16-rounded
// inputs; the grouped product also against per-expert dense products, with empty experts.
#include <vector>

#include "cuda_test_util.h"
#include "ops/cpu/linear.h"
#include "ops/cuda/gemm.h"

namespace moetune::testing {
namespace {

TEST(CudaGemm, LinearForwardAndBackwardMatchCpu) {
  SKIP_WITHOUT_GPU();
  const int rows = 37, in_dim = 96, out_dim = 160;
  const auto x = round_to_bf16(random_floats(rows * in_dim, 1));
  const auto w = round_to_bf16(random_floats(out_dim * in_dim, 2, 0.1f));
  const auto dy = round_to_bf16(random_floats(rows * out_dim, 3));
  std::vector<float> y(rows * out_dim), dx(rows * in_dim), dw(out_dim * in_dim, 0.0f);
  cpu::linear_forward(y.data(), x.data(), w.data(), nullptr, rows, in_dim, out_dim);
  cpu::linear_backward(dx.data(), dw.data(), nullptr, dy.data(), x.data(), w.data(), rows, in_dim, out_dim);

  cuda::Gemm gemm(nullptr);
  auto x_d = to_device_bf16(x), w_d = to_device_bf16(w), dy_d = to_device_bf16(dy);
  auto y_d = to_device_bf16(std::vector<float>(y.size())), dx_d = to_device_bf16(std::vector<float>(dx.size()));
  auto dw_d = to_device_bf16(std::vector<float>(dw.size(), 0.0f));
  gemm.linear_forward(y_d.data(), x_d.data(), w_d.data(), rows, in_dim, out_dim);
  gemm.linear_backward(dx_d.data(), dw_d.data(), dy_d.data(), x_d.data(), w_d.data(), rows, in_dim, out_dim);
  CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_LE(relative_norm_error(to_host_f32(y_d), y), kBf16RoundTrip);
  EXPECT_LE(relative_norm_error(to_host_f32(dx_d), dx), kBf16RoundTrip);
  EXPECT_LE(relative_norm_error(to_host_f32(dw_d), dw), kBf16RoundTrip);
}

TEST(CudaGemm, GroupedLinearMatchesPerExpertProducts) {
  SKIP_WITHOUT_GPU();
  const int experts = 5, in_dim = 64, out_dim = 48;
  const std::vector<int32_t> offsets = {0, 7, 7, 40, 41, 60};  // expert 1 has no rows
  const int rows = offsets.back();
  const auto x = round_to_bf16(random_floats(rows * in_dim, 4));
  const auto w = round_to_bf16(random_floats(experts * out_dim * in_dim, 5, 0.1f));
  const auto dy = round_to_bf16(random_floats(rows * out_dim, 6));
  std::vector<float> y(rows * out_dim), dx(rows * in_dim), dw(w.size(), 0.0f);
  for (int e = 0; e < experts; ++e) {
    const int begin = offsets[e], count = offsets[e + 1] - offsets[e];
    const size_t wo = static_cast<size_t>(e) * out_dim * in_dim;
    cpu::linear_forward(y.data() + begin * out_dim, x.data() + begin * in_dim, w.data() + wo, nullptr, count, in_dim, out_dim);
    cpu::linear_backward(dx.data() + begin * in_dim, dw.data() + wo, nullptr, dy.data() + begin * out_dim,
                         x.data() + begin * in_dim, w.data() + wo, count, in_dim, out_dim);
  }
  cuda::Gemm gemm(nullptr);
  auto x_d = to_device_bf16(x), w_d = to_device_bf16(w), dy_d = to_device_bf16(dy);
  auto y_d = to_device_bf16(std::vector<float>(y.size())), dx_d = to_device_bf16(std::vector<float>(dx.size()));
  auto dw_d = to_device_bf16(std::vector<float>(dw.size(), 0.0f));
  gemm.grouped_linear_forward(y_d.data(), x_d.data(), w_d.data(), offsets, in_dim, out_dim);
  gemm.grouped_linear_backward(dx_d.data(), dw_d.data(), dy_d.data(), x_d.data(), w_d.data(), offsets, in_dim, out_dim);
  CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_LE(relative_norm_error(to_host_f32(y_d), y), kBf16RoundTrip);
  EXPECT_LE(relative_norm_error(to_host_f32(dx_d), dx), kBf16RoundTrip);
  EXPECT_LE(relative_norm_error(to_host_f32(dw_d), dw), kBf16RoundTrip);
}

}  // namespace
}  // namespace moetune::testing
