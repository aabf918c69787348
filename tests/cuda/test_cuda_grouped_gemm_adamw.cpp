// Why: grouped_gemm_adamw (ops/cuda/grouped_gemm.h) steps the experts' weights and moments inside the weight-gradient
// GEMM; its reference is the two-step path it replaces, each step tested on its own against the CPU twins: kTNWrite
// into a gradient buffer, then adamw_bf16 over it. The two must agree bit for bit on weights and both moments — with
// and without decay, with a gradient scale, with empty experts (a zero gradient still decays the moments and moves the
// weights) and edge tiles — and bad arguments must be refused before any launch. A timing test prints the fused step
// of one Qwen3-30B-A3B MoE layer beside the two-step path (Hopper kTNWrite + adamw_bf16).
#include <string>
#include <vector>

#include "grouped_gemm_cases.h"
#include "ops/cuda/adamw.h"
#include "ops/cuda/grouped_gemm.h"
#include "ops/cuda/grouped_gemm_sm90.h"

namespace moetune::testing {
namespace {

const cpu::AdamWHyper kHyper{1e-3, 0.9, 0.95, 1e-8, 0.1, 4};

// Weights, moments and the gradient buffer of one expert projection (c.w's shape), on the device.
struct StepState {
  DeviceBuffer<bf16> w, m, v;
  explicit StepState(const ExpertCase& c, uint64_t seed)
      : w(to_device_bf16(c.w)),
        m(to_device_bf16(round_to_bf16(random_floats(c.w.size(), seed, 1e-2f)))),
        v(to_device_bf16(squared(random_floats(c.w.size(), seed + 1, 1e-2f)))) {}
  static std::vector<float> squared(std::vector<float> x) {
    for (float& value : x) value *= value;
    return round_to_bf16(x);
  }
};

void expect_fused_equals_two_steps(const std::vector<int>& counts, int in_dim, int out_dim, bool decay,
                                   float grad_scale, uint64_t seed) {
  const std::string label = "E=" + std::to_string(counts.size()) + " in=" + std::to_string(in_dim) +
                            " out=" + std::to_string(out_dim) + (decay ? " decay" : " no decay") +
                            " scale=" + std::to_string(grad_scale);
  const ExpertCase c = make_case(counts, in_dim, out_dim, seed, false);
  DeviceCase d(c);
  StepState fused(c, seed + 10), reference(c, seed + 10);
  // Reference: the gradient written into stale memory, then the optimizer over one span.
  fill_with_nan(d.dw);
  cuda::grouped_gemm(GroupedLayout::kTNWrite, d.offsets.data(), c.experts, c.rows, out_dim, in_dim, d.dy.data(),
                     d.x.data(), d.dw.data(), nullptr);
  const cuda::AdamWPlan plan({{0, c.w.size(), decay}}, c.w.size());
  cuda::adamw_bf16(reference.w.data(), d.dw.data(), reference.m.data(), reference.v.data(), plan, kHyper, grad_scale,
                   nullptr);
  cuda::grouped_gemm_adamw(d.offsets.data(), c.experts, out_dim, in_dim, d.dy.data(), d.x.data(), fused.w.data(),
                           {fused.m.data(), fused.v.data(), kHyper, decay, grad_scale}, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_TRUE(same_bits(fused.w, reference.w)) << label << ": weights";
  EXPECT_TRUE(same_bits(fused.m, reference.m)) << label << ": first moments";
  EXPECT_TRUE(same_bits(fused.v, reference.v)) << label << ": second moments";
  // The step did something everywhere (an empty expert's weights move too: its moments are not zero).
  EXPECT_FALSE(same_bits(fused.w, StepState(c, seed + 10).w)) << label;
}

TEST(CudaGroupedGemmAdamW, EqualsWeightGradientThenAdamW) {
  SKIP_WITHOUT_GPU();
  // Half tiles in both output dimensions, empty first and last experts, a K tail of 63 rows.
  expect_fused_equals_two_steps({0, 300, 1, 63, 0}, 192, 128, true, 1.0f, 31);
  expect_fused_equals_two_steps({129, 0, 1, 128, 75}, 128, 192, false, 0.5f, 41);
  expect_fused_equals_two_steps(kRealisticCounts, kRealisticIn, kRealisticOut, true, 1.0f, 51);
}

TEST(CudaGroupedGemmAdamW, RejectsBadArgumentsBeforeLaunching) {
  SKIP_WITHOUT_GPU();
  DeviceBuffer<int32_t> offsets(std::vector<int32_t>{0, 4});
  DeviceBuffer<bf16> a(64 * 4 + 8), b(64 * 4), w(64 * 64 + 8), m(64 * 64 + 8), v(64 * 64);
  const cuda::GroupedAdamW step{m.data(), v.data(), kHyper, true, 1.0f};
  EXPECT_THROW(cuda::grouped_gemm_adamw(offsets.data(), 1, 64, 96, a.data(), b.data(), w.data(), step, nullptr), Error);
  EXPECT_THROW(cuda::grouped_gemm_adamw(offsets.data(), 0, 64, 64, a.data(), b.data(), w.data(), step, nullptr), Error);
  EXPECT_THROW(cuda::grouped_gemm_adamw(nullptr, 1, 64, 64, a.data(), b.data(), w.data(), step, nullptr), Error);
  EXPECT_THROW(cuda::grouped_gemm_adamw(offsets.data(), 1, 64, 64, a.data() + 1, b.data(), w.data(), step, nullptr),
               Error);
  const cuda::GroupedAdamW misaligned{m.data() + 4, v.data(), kHyper, true, 1.0f};
  EXPECT_THROW(cuda::grouped_gemm_adamw(offsets.data(), 1, 64, 64, a.data(), b.data(), w.data(), misaligned, nullptr),
               Error);
}

// One Qwen3-30B-A3B MoE layer's expert weights (E = 128, 32,768 rows): the fused step against the two-step path on the
// Hopper GEMM (what the engine runs without it). Prints only.
TEST(CudaGroupedGemmAdamWTiming, Qwen3ExpertShapes) {
  SKIP_WITHOUT_GPU();
  Qwen3ExpertBuffers b;
  constexpr int kExperts = Qwen3ExpertBuffers::kExperts;
  constexpr int kHidden = Qwen3ExpertBuffers::kHidden, kInter = Qwen3ExpertBuffers::kInter;
  constexpr int kGateUp = Qwen3ExpertBuffers::kGateUp;
  DeviceBuffer<bf16> m_gate_up(b.w_gate_up.size()), v_gate_up(b.w_gate_up.size()), m_down(b.w_down.size()),
      v_down(b.w_down.size());
  fill_pattern(m_gate_up, 7, 1e-3f);
  fill_pattern(m_down, 8, 1e-3f);
  v_gate_up.zero();
  v_down.zero();
  const cuda::AdamWPlan plan_gate_up({{0, b.w_gate_up.size(), true}}, b.w_gate_up.size());
  const cuda::AdamWPlan plan_down({{0, b.w_down.size(), true}}, b.w_down.size());
  cuda::Sm90GroupedGemm sm90(kExperts);

  const double fused_gate_up = time_ms([&] {
    cuda::grouped_gemm_adamw(b.offsets.data(), kExperts, kGateUp, kHidden, b.d_h.data(), b.x.data(), b.w_gate_up.data(),
                             {m_gate_up.data(), v_gate_up.data(), kHyper, true, 1.0f}, nullptr);
  });
  const double fused_down = time_ms([&] {
    cuda::grouped_gemm_adamw(b.offsets.data(), kExperts, kHidden, kInter, b.d_out.data(), b.act.data(), b.w_down.data(),
                             {m_down.data(), v_down.data(), kHyper, true, 1.0f}, nullptr);
  });
  const double wgrad_gate_up = time_ms([&] {
    sm90.run(GroupedLayout::kTNWrite, b.offsets.data(), kExperts, kGateUp, kHidden, b.d_h.data(), b.x.data(),
             b.dw_gate_up.data(), nullptr);
  });
  const double wgrad_down = time_ms([&] {
    sm90.run(GroupedLayout::kTNWrite, b.offsets.data(), kExperts, kHidden, kInter, b.d_out.data(), b.act.data(),
             b.dw_down.data(), nullptr);
  });
  const double step_gate_up = time_ms([&] {
    cuda::adamw_bf16(b.w_gate_up.data(), b.dw_gate_up.data(), m_gate_up.data(), v_gate_up.data(), plan_gate_up, kHyper,
                     1.0f, nullptr);
  });
  const double step_down = time_ms([&] {
    cuda::adamw_bf16(b.w_down.data(), b.dw_down.data(), m_down.data(), v_down.data(), plan_down, kHyper, 1.0f, nullptr);
  });
  const double bytes = 12.0 * static_cast<double>(b.w_gate_up.size() + b.w_down.size());  // w, m, v read + written
  const double fused = fused_gate_up + fused_down, two_steps = wgrad_gate_up + wgrad_down + step_gate_up + step_down;
  std::printf("[grouped gemm adamw timing] gate_up: fused %.3f ms | sm90 wgrad %.3f + adamw %.3f ms\n", fused_gate_up,
              wgrad_gate_up, step_gate_up);
  std::printf("[grouped gemm adamw timing] down:    fused %.3f ms | sm90 wgrad %.3f + adamw %.3f ms\n", fused_down,
              wgrad_down, step_down);
  std::printf("[grouped gemm adamw timing] one MoE layer's experts: fused %.3f ms (%.2f TB/s of weight and moment "
              "traffic) | two steps %.3f ms\n",
              fused, bytes / (fused * 1e-3) / 1e12, two_steps);
  CUDA_CHECK(cudaDeviceSynchronize());
}

}  // namespace
}  // namespace moetune::testing
