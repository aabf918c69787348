// Why: OLMoE's clip_qkv must clamp exactly as the CPU twin does (ops/cpu/clamp.h) and pass the gradient exactly where
// PyTorch does: inside the bounds and on them, never outside. Both are exact on bf16 inputs (a comparison and a copy),
// so the GPU must give the CPU twin's values bit for bit (its output rounded to bf16 when the limit is not a bf16
// number), with inputs lying exactly on ±limit.
#include <gtest/gtest.h>

#include "cuda_test_util.h"
#include "ops/cpu/clamp.h"
#include "ops/cuda/clamp.h"

namespace moetune::testing {
namespace {

std::vector<float> inputs_with_bounds(size_t count, float limit, uint64_t seed) {
  std::vector<float> x = round_to_bf16(random_floats(count, seed, 2.0f * limit));
  const float bound = bf16_to_f32(f32_to_bf16(limit));
  for (size_t i = 0; i < count; i += 17) x[i] = (i / 17) % 2 ? bound : -bound;
  return x;
}

TEST(CudaClamp, ForwardAndBackwardEqualCpuExactly) {
  SKIP_WITHOUT_GPU();
  for (const float limit : {1.5f, 0.3f, 8.0f}) {
    for (const size_t count : {size_t(1), size_t(1000), size_t(3000001)}) {
      SCOPED_TRACE(::testing::Message() << "limit " << limit << ", count " << count);
      const std::vector<float> x = inputs_with_bounds(count, limit, 1), d = round_to_bf16(random_floats(count, 2));
      std::vector<float> out(count), d_expected = d;
      cpu::clamp_forward(out.data(), x.data(), static_cast<long>(count), limit);
      cpu::clamp_backward(d_expected.data(), x.data(), static_cast<long>(count), limit);

      auto x_d = to_device_bf16(x), d_d = to_device_bf16(d);
      cuda::DeviceBuffer<cuda::bf16> out_d(count);
      cuda::clamp_forward(out_d.data(), x_d.data(), count, limit, nullptr);
      cuda::clamp_backward(d_d.data(), x_d.data(), count, limit, nullptr);
      CUDA_CHECK(cudaDeviceSynchronize());
      EXPECT_EQ(first_difference(to_host_f32(out_d), round_to_bf16(out)), -1);
      EXPECT_EQ(first_difference(to_host_f32(d_d), d_expected), -1);

      // In place (out aliases in), as the engine may call it.
      cuda::clamp_forward(x_d.data(), x_d.data(), count, limit, nullptr);
      CUDA_CHECK(cudaDeviceSynchronize());
      EXPECT_EQ(first_difference(to_host_f32(x_d), to_host_f32(out_d)), -1);
    }
  }
}

}  // namespace
}  // namespace moetune::testing
