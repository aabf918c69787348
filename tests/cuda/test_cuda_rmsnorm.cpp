// Why: RMSNorm runs before every attention, MLP and the LM head and per head on q/k, so the GPU forward, the fused
// residual-add forward and the backward are held to the CPU twin on bf16-rounded inputs, over the shapes the engine
// uses (cols = 128 per head, 2048 full width, 8192) and odd ones (cols = 1, 5, 127, 130; row counts that leave the last
// block partly empty; enough rows for many weight-gradient chunks). Tolerances: bf16 outputs rounded once from fp32
// (kBf16RoundTrip, norm-wise); fp32 rstd 1e-5 relative per row; fp32 d_weight 1e-5 norm-wise (fp32 sums in another
// order). The weight gradient is reduced without atomics, so two runs must agree bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "cuda_test_util.h"
#include "ops/cpu/rmsnorm.h"
#include "ops/cuda/rmsnorm.h"

namespace moetune::testing {
namespace {

struct Shape {
  int rows, cols;
  float eps;
};

const Shape kShapes[] = {{4, 1, 0.1f},     {7, 5, 1e-6f},      {9, 128, 1e-6f},  {1001, 128, 1e-6f}, {3, 127, 1e-6f},
                         {5, 130, 1e-6f},  {16, 2048, 1e-6f},  {2, 8192, 1e-5f}, {20000, 128, 1e-6f}};

std::vector<float> weights(int cols, uint64_t seed) {
  std::vector<float> w = random_floats(cols, seed, 0.3f);
  for (float& v : w) v += 1.0f;
  return round_to_bf16(w);
}

void expect_rstd_close(const std::vector<float>& gpu, const std::vector<float>& cpu) {
  for (size_t r = 0; r < cpu.size(); ++r) ASSERT_NEAR(gpu[r], cpu[r], 1e-5 * std::abs(cpu[r])) << "row " << r;
}

TEST(CudaRmsNorm, ForwardMatchesCpu) {
  SKIP_WITHOUT_GPU();
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << "rows " << s.rows << ", cols " << s.cols);
    const std::vector<float> x = round_to_bf16(random_floats(size_t(s.rows) * s.cols, 1, 2.0f)), w = weights(s.cols, 2);
    std::vector<float> out(x.size()), rstd(s.rows);
    cpu::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), s.rows, s.cols, s.eps);

    auto x_d = to_device_bf16(x), w_d = to_device_bf16(w), out_d = to_device_bf16(std::vector<float>(x.size(), 7.0f));
    cuda::DeviceBuffer<float> rstd_d(s.rows);
    cuda::rmsnorm_forward(out_d.data(), rstd_d.data(), x_d.data(), w_d.data(), s.rows, s.cols, s.eps, nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    EXPECT_LT(relative_norm_error(to_host_f32(out_d), out), kBf16RoundTrip);
    expect_rstd_close(rstd_d.download(), rstd);

    // In place (out aliases in) gives the same bits.
    cuda::rmsnorm_forward(x_d.data(), rstd_d.data(), x_d.data(), w_d.data(), s.rows, s.cols, s.eps, nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    EXPECT_EQ(first_difference(to_host_f32(x_d), to_host_f32(out_d)), -1);
  }
}

TEST(CudaRmsNorm, AddForwardMatchesCpu) {
  SKIP_WITHOUT_GPU();
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << "rows " << s.rows << ", cols " << s.cols);
    const size_t n = size_t(s.rows) * s.cols;
    const std::vector<float> a = round_to_bf16(random_floats(n, 3)), b = round_to_bf16(random_floats(n, 4)),
                             w = weights(s.cols, 5);
    std::vector<float> residual(n);
    for (size_t i = 0; i < n; ++i) residual[i] = a[i] + b[i];
    residual = round_to_bf16(residual);  // the bf16 residual stream
    std::vector<float> normed(n), rstd(s.rows);
    cpu::rmsnorm_forward(normed.data(), rstd.data(), residual.data(), w.data(), s.rows, s.cols, s.eps);

    auto a_d = to_device_bf16(a), b_d = to_device_bf16(b), w_d = to_device_bf16(w);
    cuda::DeviceBuffer<cuda::bf16> residual_d(n), normed_d(n);
    cuda::DeviceBuffer<float> rstd_d(s.rows);
    cuda::add_rmsnorm_forward(residual_d.data(), normed_d.data(), rstd_d.data(), a_d.data(), b_d.data(), w_d.data(),
                              s.rows, s.cols, s.eps, nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    EXPECT_EQ(first_difference(to_host_f32(residual_d), residual), -1);
    EXPECT_LT(relative_norm_error(to_host_f32(normed_d), normed), kBf16RoundTrip);
    expect_rstd_close(rstd_d.download(), rstd);

    // In-place residual update (residual_out aliases a) gives the same bits.
    cuda::DeviceBuffer<cuda::bf16> normed2_d(n);
    cuda::add_rmsnorm_forward(a_d.data(), normed2_d.data(), rstd_d.data(), a_d.data(), b_d.data(), w_d.data(), s.rows,
                              s.cols, s.eps, nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    EXPECT_EQ(first_difference(to_host_f32(a_d), residual), -1);
    EXPECT_EQ(first_difference(to_host_f32(normed2_d), to_host_f32(normed_d)), -1);
  }
}

TEST(CudaRmsNorm, BackwardMatchesCpu) {
  SKIP_WITHOUT_GPU();
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << "rows " << s.rows << ", cols " << s.cols);
    const size_t n = size_t(s.rows) * s.cols;
    const std::vector<float> x = round_to_bf16(random_floats(n, 6)), w = weights(s.cols, 7),
                             dy = round_to_bf16(random_floats(n, 8)), dw_before = random_floats(s.cols, 9);
    std::vector<float> out(n), rstd(s.rows), dx(n), dw = dw_before;
    cpu::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), s.rows, s.cols, s.eps);
    cpu::rmsnorm_backward(dx.data(), dw.data(), dy.data(), x.data(), w.data(), rstd.data(), s.rows, s.cols);

    auto x_d = to_device_bf16(x), w_d = to_device_bf16(w), dy_d = to_device_bf16(dy);
    cuda::DeviceBuffer<cuda::bf16> out_d(n), dx_d(n);
    cuda::DeviceBuffer<float> rstd_d(s.rows), dw_d(dw_before),
        scratch(cuda::rmsnorm_backward_scratch_floats(s.rows, s.cols));
    cuda::rmsnorm_forward(out_d.data(), rstd_d.data(), x_d.data(), w_d.data(), s.rows, s.cols, s.eps, nullptr);
    cuda::rmsnorm_backward(dx_d.data(), dw_d.data(), dy_d.data(), x_d.data(), w_d.data(), rstd_d.data(), s.rows, s.cols,
                           scratch.data(), nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    EXPECT_LT(relative_norm_error(to_host_f32(dx_d), dx), kBf16RoundTrip);
    EXPECT_LT(relative_norm_error(dw_d.download(), dw), 1e-5);

    // d_in aliasing d_out: same d_in, same d_weight increment.
    cuda::DeviceBuffer<float> dw2_d(dw_before);
    cuda::rmsnorm_backward(dy_d.data(), dw2_d.data(), dy_d.data(), x_d.data(), w_d.data(), rstd_d.data(), s.rows, s.cols,
                           scratch.data(), nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    EXPECT_EQ(first_difference(to_host_f32(dy_d), to_host_f32(dx_d)), -1);
    EXPECT_EQ(first_difference(dw2_d.download(), dw_d.download()), -1);
  }
}

TEST(CudaRmsNorm, BackwardIsDeterministic) {
  SKIP_WITHOUT_GPU();
  const int rows = 4099, cols = 2048;
  const size_t n = size_t(rows) * cols;
  auto x_d = to_device_bf16(random_floats(n, 10)), w_d = to_device_bf16(weights(cols, 11)),
       dy_d = to_device_bf16(random_floats(n, 12));
  cuda::DeviceBuffer<cuda::bf16> out_d(n), dx_d(n);
  cuda::DeviceBuffer<float> rstd_d(rows), scratch(cuda::rmsnorm_backward_scratch_floats(rows, cols));
  cuda::rmsnorm_forward(out_d.data(), rstd_d.data(), x_d.data(), w_d.data(), rows, cols, 1e-6f, nullptr);
  std::vector<std::vector<float>> dw_runs;
  std::vector<std::vector<cuda::bf16>> dx_runs;
  for (int run = 0; run < 2; ++run) {
    cuda::DeviceBuffer<float> dw_d(cols);
    dw_d.zero();
    cuda::rmsnorm_backward(dx_d.data(), dw_d.data(), dy_d.data(), x_d.data(), w_d.data(), rstd_d.data(), rows, cols,
                           scratch.data(), nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    dw_runs.push_back(dw_d.download());
    dx_runs.push_back(dx_d.download());
  }
  EXPECT_EQ(first_difference(dw_runs[0], dw_runs[1]), -1);
  EXPECT_EQ(first_difference(dx_runs[0], dx_runs[1]), -1);
}

}  // namespace
}  // namespace moetune::testing
