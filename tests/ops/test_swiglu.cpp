// Why: SwiGLU is the activation of every expert; the order of the halves (gate first, as Transformers chunks gate_up)
// and the silu derivative are easy to get wrong, so both are checked against act = silu(gate) * up in double and its
// finite differences. Tolerances: forward 1e-5 (fp32 exp/divide, ~1e-7); gradient 1e-4 (fp32 analytic vs ~1e-9-accurate
// differences). The routed backward (the CUDA engine's, without the expert outputs) is held to the combine's routing
// gradient written out: dot(d_out, W_down act) in double, 1e-5 (fp32 sums of length <= 8).
#include <gtest/gtest.h>

#include <cmath>

#include "op_test_util.h"
#include "ops/cpu/swiglu.h"

namespace moetune::test {
namespace {

constexpr int kRows = 3, kInter = 5;

Doubles reference_swiglu(const Doubles& gate_up) {
  Doubles act(kRows * kInter);
  for (int r = 0; r < kRows; ++r)
    for (int i = 0; i < kInter; ++i) {
      const double g = gate_up[r * 2 * kInter + i], u = gate_up[r * 2 * kInter + kInter + i];
      act[r * kInter + i] = g / (1.0 + std::exp(-g)) * u;
    }
  return act;
}

TEST(CpuOpsSwiglu, ForwardAndBackwardMatchReference) {
  const Floats gate_up = random_floats(kRows * 2 * kInter, 31, -4.0f, 4.0f), d_act = random_floats(kRows * kInter, 32);
  Floats act(kRows * kInter);
  cpu::swiglu_forward(act.data(), gate_up.data(), kRows, kInter);
  EXPECT_LT(rel_error(act, reference_swiglu(to_double(gate_up))), 1e-5);

  const Doubles want =
      finite_diff([&](const Doubles& v) { return dot(reference_swiglu(v), to_double(d_act)); }, to_double(gate_up));
  Floats d_gate_up(gate_up.size(), 99.0f);  // overwritten
  cpu::swiglu_backward(d_gate_up.data(), d_act.data(), gate_up.data(), kRows, kInter);
  EXPECT_LT(rel_error(d_gate_up, want), 1e-4);
}

TEST(CpuOpsSwiglu, SaturatedGatesStayFinite) {
  // exp(-gate) overflows fp32 for gate < -88: silu must still give 0 (not NaN), and its slope the limits 0 and 1.
  Floats gate_up(kRows * 2 * kInter, 1.0f);
  const float gates[kInter] = {-200.0f, -90.0f, 0.0f, 90.0f, 200.0f};
  for (int r = 0; r < kRows; ++r)
    for (int i = 0; i < kInter; ++i) gate_up[r * 2 * kInter + i] = gates[i];
  Floats act(kRows * kInter), d_gate_up(gate_up.size());
  const Floats ones(kRows * kInter, 1.0f);
  cpu::swiglu_forward(act.data(), gate_up.data(), kRows, kInter);
  cpu::swiglu_backward(d_gate_up.data(), ones.data(), gate_up.data(), kRows, kInter);
  const float want_act[kInter] = {0.0f, 0.0f, 0.0f, 90.0f, 200.0f},
              want_d_gate[kInter] = {0.0f, 0.0f, 0.5f, 1.0f, 1.0f};
  for (int r = 0; r < kRows; ++r)
    for (int i = 0; i < kInter; ++i) {
      EXPECT_FLOAT_EQ(act[r * kInter + i], want_act[i]) << "gate " << gates[i];
      EXPECT_FLOAT_EQ(d_gate_up[r * 2 * kInter + i], want_d_gate[i]) << "gate " << gates[i];
    }
}

TEST(CpuOpsSwiglu, RoutedBackwardGivesTheCombinesRoutingGradient) {
  // 3 tokens, top-2: 6 routed rows in a shuffled expert order; one expert's down projection W (H, I) for every row.
  constexpr int kTokens = 3, kTopK = 2, kHidden = 4, kRoutedRows = kTokens * kTopK;
  const std::vector<int32_t> row_token = {2, 0, 1, 0, 2, 1}, row_slot = {1, 0, 1, 1, 0, 0};
  const Floats gate_up = random_floats(kRoutedRows * 2 * kInter, 41, -4.0f, 4.0f),
               top_weight = random_floats(kTokens * kTopK, 42, 0.1f, 1.0f),
               d_out = random_floats(kTokens * kHidden, 43), w_down = random_floats(kHidden * kInter, 44);
  Floats act(kRoutedRows * kInter), d_act(kRoutedRows * kInter);
  cpu::swiglu_forward(act.data(), gate_up.data(), kRoutedRows, kInter);
  for (int r = 0; r < kRoutedRows; ++r)
    for (int i = 0; i < kInter; ++i) {
      float sum = 0.0f;
      for (int h = 0; h < kHidden; ++h) sum += d_out[row_token[r] * kHidden + h] * w_down[h * kInter + i];
      d_act[r * kInter + i] = sum;
    }
  Floats d_gate_up(gate_up.size(), 99.0f), d_top_weight(kTokens * kTopK, 99.0f), act_weighted(act.size(), 99.0f);
  cpu::swiglu_backward_routed(d_gate_up.data(), d_top_weight.data(), act_weighted.data(), d_act.data(), gate_up.data(),
                              top_weight.data(), row_token.data(), row_slot.data(), kRoutedRows, kInter, kTopK);

  Doubles want_d_top_weight(kTokens * kTopK), want_act_weighted(act.size());
  Floats weighted_d_act(d_act.size()), want_d_gate_up(gate_up.size());
  for (int r = 0; r < kRoutedRows; ++r) {
    const int pick = row_token[r] * kTopK + row_slot[r];
    double d_weight = 0.0;  // dot(d_out[t], W_down act[r])
    for (int h = 0; h < kHidden; ++h) {
      double out = 0.0;
      for (int i = 0; i < kInter; ++i) out += double(w_down[h * kInter + i]) * act[r * kInter + i];
      d_weight += double(d_out[row_token[r] * kHidden + h]) * out;
    }
    want_d_top_weight[pick] = d_weight;
    for (int i = 0; i < kInter; ++i) {
      want_act_weighted[r * kInter + i] = double(top_weight[pick]) * act[r * kInter + i];
      weighted_d_act[r * kInter + i] = top_weight[pick] * d_act[r * kInter + i];
    }
  }
  cpu::swiglu_backward(want_d_gate_up.data(), weighted_d_act.data(), gate_up.data(), kRoutedRows, kInter);
  EXPECT_LT(rel_error(d_top_weight, want_d_top_weight), 1e-5);
  EXPECT_LT(rel_error(act_weighted, want_act_weighted), 1e-6);
  EXPECT_LT(rel_error(d_gate_up, to_double(want_d_gate_up)), 1e-6);
}

}  // namespace
}  // namespace moetune::test
