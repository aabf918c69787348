// Why: rotary embeddings are applied to q and k in every layer (forward) and undone on their gradients (backward), so
// both directions are held to the CPU twin on bf16-rounded inputs: head_dim 128 and 64 as in real models, an odd one,
// positions from 0 up to 32k (large angles, where cos/sin are hardest), both thetas in use. Each output is one fp32
// rotation rounded once to bf16 (kBf16RoundTrip); forward then inverse returns the input within two roundings.
#include <gtest/gtest.h>

#include <random>

#include "cuda_test_util.h"
#include "ops/cpu/rope.h"
#include "ops/cuda/rope.h"

namespace moetune::testing {
namespace {

struct Shape {
  int tokens, heads, head_dim;
  double theta;
};

std::vector<int32_t> positions_for(int tokens, uint64_t seed) {
  std::mt19937_64 generator(seed);
  std::uniform_int_distribution<int32_t> position(0, 32767);
  std::vector<int32_t> positions(tokens);
  for (int t = 0; t < tokens; ++t) positions[t] = t < 3 ? t : position(generator);  // 0, 1, 2, then anywhere
  return positions;
}

TEST(CudaRope, MatchesCpuBothDirections) {
  SKIP_WITHOUT_GPU();
  const Shape shapes[] = {{5, 3, 128, 1e6}, {17, 4, 64, 1e4}, {6, 2, 7, 1e4}, {3, 1, 2, 1e4}, {33, 16, 256, 5e5}};
  for (const Shape& s : shapes) {
    for (bool inverse : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "tokens " << s.tokens << ", heads " << s.heads << ", head_dim " << s.head_dim
                                        << ", inverse " << inverse);
      const size_t n = size_t(s.tokens) * s.heads * s.head_dim;
      const std::vector<float> x = round_to_bf16(random_floats(n, 1));
      const std::vector<int32_t> positions = positions_for(s.tokens, 2);
      std::vector<float> expected = x;
      cpu::rope_apply(expected.data(), positions.data(), s.tokens, s.heads, s.head_dim, s.theta, inverse);

      auto x_d = to_device_bf16(x);
      cuda::DeviceBuffer<int32_t> positions_d(positions);
      cuda::rope_apply(x_d.data(), positions_d.data(), s.tokens, s.heads, s.head_dim, s.theta, inverse, nullptr);
      CUDA_CHECK(cudaDeviceSynchronize());
      const std::vector<float> got = to_host_f32(x_d);
      EXPECT_LT(relative_norm_error(got, expected), kBf16RoundTrip);
      if (s.head_dim % 2 == 1) {  // the last element of each odd head is untouched
        for (size_t v = 0; v < n / s.head_dim; ++v)
          EXPECT_EQ(got[(v + 1) * s.head_dim - 1], x[(v + 1) * s.head_dim - 1]);
      }
    }
  }
}

TEST(CudaRope, InverseUndoesForward) {
  SKIP_WITHOUT_GPU();
  const int tokens = 64, heads = 8, head_dim = 128;
  const std::vector<float> x = round_to_bf16(random_floats(size_t(tokens) * heads * head_dim, 3));
  const std::vector<int32_t> positions = positions_for(tokens, 4);
  auto x_d = to_device_bf16(x);
  cuda::DeviceBuffer<int32_t> positions_d(positions);
  cuda::rope_apply(x_d.data(), positions_d.data(), tokens, heads, head_dim, 1e6, false, nullptr);
  cuda::rope_apply(x_d.data(), positions_d.data(), tokens, heads, head_dim, 1e6, true, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_LT(relative_norm_error(to_host_f32(x_d), x), 2 * kBf16RoundTrip);
}

}  // namespace
}  // namespace moetune::testing
