// Why: SwiGLU is the activation of every expert, so its forward and backward are held to the CPU twin on bf16-rounded
// inputs: widths of real experts (128, 768, 2048) and odd ones (1, 5, 1000). Every output is computed in fp32 from bf16
// inputs and rounded once (kBf16RoundTrip, norm-wise, per half of the gradient so neither half hides behind the other).
// The routed backward's routing-weight gradient is an fp32 dot product of the same bf16 inputs in another order
// (1e-5 norm-wise).
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "cuda_test_util.h"
#include "ops/cpu/swiglu.h"
#include "ops/cuda/swiglu.h"

namespace moetune::testing {
namespace {

struct Shape {
  int rows, intermediate;
};
const Shape kShapes[] = {{3, 1}, {7, 5}, {4, 128}, {33, 768}, {5, 1000}, {9, 2048}};

// The gate (first) or up (second) halves of a (rows, 2*I) tensor.
std::vector<float> half_of(const std::vector<float>& gate_up, int rows, int intermediate, int which) {
  std::vector<float> out;
  for (int r = 0; r < rows; ++r)
    for (int i = 0; i < intermediate; ++i) out.push_back(gate_up[(size_t(r) * 2 + which) * intermediate + i]);
  return out;
}

TEST(CudaSwiglu, ForwardMatchesCpu) {
  SKIP_WITHOUT_GPU();
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << "rows " << s.rows << ", I " << s.intermediate);
    const std::vector<float> gate_up = round_to_bf16(random_floats(size_t(s.rows) * 2 * s.intermediate, 1, 3.0f));
    std::vector<float> act(size_t(s.rows) * s.intermediate);
    cpu::swiglu_forward(act.data(), gate_up.data(), s.rows, s.intermediate);

    auto gate_up_d = to_device_bf16(gate_up);
    cuda::DeviceBuffer<cuda::bf16> act_d(act.size());
    cuda::swiglu_forward(act_d.data(), gate_up_d.data(), s.rows, s.intermediate, nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    EXPECT_LT(relative_norm_error(to_host_f32(act_d), act), kBf16RoundTrip);
  }
}

TEST(CudaSwiglu, BackwardMatchesCpu) {
  SKIP_WITHOUT_GPU();
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << "rows " << s.rows << ", I " << s.intermediate);
    const size_t n = size_t(s.rows) * s.intermediate;
    const std::vector<float> gate_up = round_to_bf16(random_floats(2 * n, 2, 3.0f)),
                             d_act = round_to_bf16(random_floats(n, 3));
    std::vector<float> d_gate_up(2 * n);
    cpu::swiglu_backward(d_gate_up.data(), d_act.data(), gate_up.data(), s.rows, s.intermediate);

    auto gate_up_d = to_device_bf16(gate_up), d_act_d = to_device_bf16(d_act),
         d_gate_up_d = to_device_bf16(std::vector<float>(2 * n, 9.0f));  // overwritten
    cuda::swiglu_backward(d_gate_up_d.data(), d_act_d.data(), gate_up_d.data(), s.rows, s.intermediate, nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<float> got = to_host_f32(d_gate_up_d);
    for (int which : {0, 1})
      EXPECT_LT(relative_norm_error(half_of(got, s.rows, s.intermediate, which),
                                    half_of(d_gate_up, s.rows, s.intermediate, which)),
                kBf16RoundTrip)
          << (which == 0 ? "d_gate" : "d_up");
  }
}

TEST(CudaSwiglu, RoutedBackwardMatchesCpu) {
  SKIP_WITHOUT_GPU();
  constexpr int kTopK = 4;
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << "tokens " << s.rows << ", I " << s.intermediate);
    const long rows = static_cast<long>(s.rows) * kTopK;
    const size_t n = size_t(rows) * s.intermediate;
    // Every (token, slot) routed once, in a shuffled order as the experts' grouping leaves them.
    std::vector<int32_t> pick(rows), row_token(rows), row_slot(rows);
    std::iota(pick.begin(), pick.end(), 0);
    std::shuffle(pick.begin(), pick.end(), std::mt19937(s.intermediate));
    for (long r = 0; r < rows; ++r) {
      row_token[r] = pick[r] / kTopK;
      row_slot[r] = pick[r] % kTopK;
    }
    const std::vector<float> gate_up = round_to_bf16(random_floats(2 * n, 4, 3.0f)),
                             d_act = round_to_bf16(random_floats(n, 5)), top_weight = random_floats(rows, 6);
    std::vector<float> d_gate_up(2 * n), d_top_weight(rows), act_weighted(n);
    cpu::swiglu_backward_routed(d_gate_up.data(), d_top_weight.data(), act_weighted.data(), d_act.data(),
                                gate_up.data(), top_weight.data(), row_token.data(), row_slot.data(), rows,
                                s.intermediate, kTopK);

    auto gate_up_d = to_device_bf16(gate_up), d_act_d = to_device_bf16(d_act),
         d_gate_up_d = to_device_bf16(std::vector<float>(2 * n, 9.0f)),  // overwritten
        act_weighted_d = to_device_bf16(std::vector<float>(n, 9.0f));
    cuda::DeviceBuffer<float> top_weight_d(top_weight), d_top_weight_d(std::vector<float>(rows, 9.0f));
    cuda::DeviceBuffer<int32_t> row_token_d(row_token), row_slot_d(row_slot);
    cuda::swiglu_backward_routed(d_gate_up_d.data(), d_top_weight_d.data(), act_weighted_d.data(), d_act_d.data(),
                                 gate_up_d.data(), top_weight_d.data(), row_token_d.data(), row_slot_d.data(), rows,
                                 s.intermediate, kTopK, nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<float> got_d_top_weight = d_top_weight_d.download();
    EXPECT_LT(relative_norm_error(got_d_top_weight, d_top_weight), 1e-5);
    EXPECT_LT(relative_norm_error(to_host_f32(act_weighted_d), act_weighted), kBf16RoundTrip);
    const std::vector<float> got = to_host_f32(d_gate_up_d);
    for (int which : {0, 1})
      EXPECT_LT(relative_norm_error(half_of(got, static_cast<int>(rows), s.intermediate, which),
                                    half_of(d_gate_up, static_cast<int>(rows), s.intermediate, which)),
                kBf16RoundTrip)
          << (which == 0 ? "d_gate" : "d_up");
  }
}

}  // namespace
}  // namespace moetune::testing
