// Why: the sigmoid gate joins Qwen2-MoE's shared expert to every sparse layer's output, so its forward and backward are
// held to the CPU twin (ops/cpu/sigmoid_gate.h) on bf16-rounded inputs, over hidden widths from 1 to 2048 (narrow rows
// use a partial warp) and logits far into both tails. Tolerances: each bf16 output is computed in fp32 and rounded once
// (kBf16RoundTrip, norm-wise). The per-token dot product is a fixed-order reduction: two runs agree bit for bit.
#include <gtest/gtest.h>

#include "cuda_test_util.h"
#include "ops/cpu/sigmoid_gate.h"
#include "ops/cuda/sigmoid_gate.h"

namespace moetune::testing {
namespace {

struct Shape {
  int tokens, hidden;
};
const Shape kShapes[] = {{1, 1}, {3, 5}, {17, 64}, {9, 300}, {40, 2048}};

TEST(CudaSigmoidGate, ForwardMatchesCpu) {
  SKIP_WITHOUT_GPU();
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << "tokens " << s.tokens << ", hidden " << s.hidden);
    const size_t n = size_t(s.tokens) * s.hidden;
    const std::vector<float> x = round_to_bf16(random_floats(n, 1)), logit = random_floats(s.tokens, 2, 4.0f);
    const std::vector<float> start = round_to_bf16(random_floats(n, 3));
    std::vector<float> out = start;
    cpu::sigmoid_gate_forward(out.data(), x.data(), logit.data(), s.tokens, s.hidden);

    auto x_d = to_device_bf16(x), out_d = to_device_bf16(start);
    cuda::DeviceBuffer<float> logit_d(logit);
    cuda::sigmoid_gate_forward(out_d.data(), x_d.data(), logit_d.data(), s.tokens, s.hidden, nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    EXPECT_LT(relative_norm_error(to_host_f32(out_d), out), kBf16RoundTrip);
  }
}

TEST(CudaSigmoidGate, BackwardMatchesCpuAndIsDeterministic) {
  SKIP_WITHOUT_GPU();
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << "tokens " << s.tokens << ", hidden " << s.hidden);
    const size_t n = size_t(s.tokens) * s.hidden;
    const std::vector<float> x = round_to_bf16(random_floats(n, 4)), d_out = round_to_bf16(random_floats(n, 5)),
                             logit = random_floats(s.tokens, 6, 4.0f);
    std::vector<float> d_x(n), d_logit(s.tokens);
    cpu::sigmoid_gate_backward(d_x.data(), d_logit.data(), d_out.data(), x.data(), logit.data(), s.tokens, s.hidden);

    auto x_d = to_device_bf16(x), d_out_d = to_device_bf16(d_out);
    auto d_x_d = to_device_bf16(std::vector<float>(n, 9.0f)), d_logit_d = to_device_bf16(std::vector<float>(s.tokens, 9.0f));
    auto d_logit_again = to_device_bf16(std::vector<float>(s.tokens, 9.0f));
    cuda::DeviceBuffer<float> logit_d(logit);
    cuda::sigmoid_gate_backward(d_x_d.data(), d_logit_d.data(), d_out_d.data(), x_d.data(), logit_d.data(), s.tokens,
                                s.hidden, nullptr);
    cuda::sigmoid_gate_backward(d_x_d.data(), d_logit_again.data(), d_out_d.data(), x_d.data(), logit_d.data(),
                                s.tokens, s.hidden, nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    EXPECT_LT(relative_norm_error(to_host_f32(d_x_d), d_x), kBf16RoundTrip);
    EXPECT_LT(relative_norm_error(to_host_f32(d_logit_d), d_logit), kBf16RoundTrip);
    EXPECT_EQ(first_difference(to_host_f32(d_logit_d), to_host_f32(d_logit_again)), -1);
  }
}

}  // namespace
}  // namespace moetune::testing
