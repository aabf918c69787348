// Why: SwiGLU is the activation of every expert; the order of the halves (gate first, as Transformers chunks gate_up)
// and the silu derivative are easy to get wrong, so both are checked against act = silu(gate) * up in double and its
// finite differences. Tolerances: forward 1e-5 (fp32 exp/divide, ~1e-7); gradient 1e-4 (fp32 analytic vs ~1e-9-accurate
// differences).
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

}  // namespace
}  // namespace moetune::test
