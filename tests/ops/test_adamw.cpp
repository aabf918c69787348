// Why: the optimizer step decides every parameter a run produces. adamw_update is compared over 3 steps (new gradients
// each step) with a scalar transcription of PyTorch's _single_tensor_adamw in double, with weight decay on and off and
// with an eps large enough to matter (so eps inside vs outside the bias correction would show). Tolerances: moments
// 1e-6 (fp32 state after 3 steps carries a few roundings, ~3e-7); the parameter change 1e-4 (it is the difference of
// two fp32 values ~1, so ~1e-7 / 1e-2 of it is rounding, while a wrong term moves it by >= 1e-2 of itself).
// grad_norm_squared sums in double: 1e-12. scale_in_place: fp32 rounding of the factor and the product, 2e-7.
#include <gtest/gtest.h>

#include <cmath>

#include "op_test_util.h"
#include "ops/cpu/adamw.h"

namespace moetune::test {
namespace {

// torch.optim.AdamW, one element, one step (step is 1-based after the update).
void reference_adamw(double& p, double g, double& m, double& v, const cpu::AdamWHyper& h, bool decay) {
  if (decay) p *= 1.0 - h.lr * h.weight_decay;
  m = h.beta1 * m + (1.0 - h.beta1) * g;
  v = h.beta2 * v + (1.0 - h.beta2) * g * g;
  const double bias_correction1 = 1.0 - std::pow(h.beta1, h.step), bias_correction2 = 1.0 - std::pow(h.beta2, h.step);
  const double denom = std::sqrt(v) / std::sqrt(bias_correction2) + h.eps;
  p -= h.lr / bias_correction1 * m / denom;
}

void check_three_steps(cpu::AdamWHyper h, bool decay, float grad_scale) {
  const size_t n = 16;
  Floats p = random_floats(n, 91), m(n, 0.0f), v(n, 0.0f);
  Doubles pd = to_double(p), md(n, 0.0), vd(n, 0.0);
  const Doubles p0 = pd;
  for (long step = 1; step <= 3; ++step) {
    Floats g = random_floats(n, 92 + static_cast<uint32_t>(step));
    for (float& x : g) x *= grad_scale;
    h.step = step;
    cpu::adamw_update(p.data(), g.data(), m.data(), v.data(), n, h, decay);
    for (size_t i = 0; i < n; ++i) reference_adamw(pd[i], g[i], md[i], vd[i], h, decay);
  }
  // PyTorch passes 1 - beta as a double-computed scalar (lerp weight, addcmul value), so its fp32 moments stay within a
  // few roundings (~3e-7) of the double formula.
  EXPECT_LT(rel_error(m, md), 1e-6);
  EXPECT_LT(rel_error(v, vd), 1e-6);
  // The parameter change, not the parameter: a small wrong term in the update must not hide behind |p| ~ 1.
  Doubles want_delta(n);
  Floats got_delta(n);
  for (size_t i = 0; i < n; ++i) {
    want_delta[i] = pd[i] - p0[i];
    got_delta[i] = static_cast<float>(p[i] - p0[i]);
  }
  EXPECT_LT(rel_error(got_delta, want_delta), 1e-4);  // the difference of two ~1 fp32 values: ~1e-7 / 1e-2 of the step
}

TEST(CpuOpsAdamW, ThreeStepsMatchPyTorchFormulaWithDecay) {
  check_three_steps({1e-2, 0.9, 0.999, 1e-8, 0.1, 0}, true, 1.0f);
}

TEST(CpuOpsAdamW, ThreeStepsMatchPyTorchFormulaWithoutDecay) {
  check_three_steps({1e-2, 0.9, 0.999, 1e-8, 0.1, 0}, false, 1.0f);
}

TEST(CpuOpsAdamW, EpsComparableToGradientsAndOtherBetas) {
  check_three_steps({1e-2, 0.8, 0.95, 1e-3, 0.05, 0}, true, 1e-3f);
}

TEST(CpuOpsAdamW, GradNormSquaredSumsInDouble) {
  const Floats g = random_floats(1000, 97, -3.0f, 3.0f);
  double want = 0.0;
  for (float x : g) want += static_cast<double>(x) * x;
  EXPECT_NEAR(cpu::grad_norm_squared(g.data(), g.size()), want, 1e-12 * want);
  const Floats huge = {1e20f, 3.0f};  // (1e20)^2 overflows an fp32 sum of squares
  const double want_huge = static_cast<double>(huge[0]) * huge[0] + 9.0;
  EXPECT_NEAR(cpu::grad_norm_squared(huge.data(), huge.size()), want_huge, 1e-12 * want_huge);
}

TEST(CpuOpsAdamW, ScaleInPlace) {
  Floats values = random_floats(100, 98, -3.0f, 3.0f);
  Doubles want = to_double(values);
  for (double& x : want) x *= 0.3;
  cpu::scale_in_place(values.data(), values.size(), 0.3f);
  EXPECT_LT(rel_error(values, want), 2e-7);  // 0.3f is off by 4e-8 relative, the product rounds by <= 6e-8
}

}  // namespace
}  // namespace moetune::test
