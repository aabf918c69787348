// Why: RMSNorm runs before every attention, MLP and the LM head (and per head on q/k), so its forward and both
// gradients are checked against y = w * x / sqrt(mean(x^2) + eps) in double and that formula's finite differences,
// including the edges: cols = 1, rows of tiny values where eps dominates, a zero row, and the in-place (aliased) calls
// the engine makes. Tolerances: forward 1e-5 (fp32 rstd, ~1e-7 rounding); gradients 1e-4 (fp32 analytic vs
// ~1e-9-accurate differences).
#include <gtest/gtest.h>

#include <cmath>

#include "op_test_util.h"
#include "ops/cpu/rmsnorm.h"

namespace moetune::test {
namespace {

Doubles reference_rmsnorm(const Doubles& x, const Doubles& w, int rows, int cols, double eps) {
  Doubles out(x.size());
  for (int r = 0; r < rows; ++r) {
    double mean_square = 0.0;
    for (int c = 0; c < cols; ++c) mean_square += x[r * cols + c] * x[r * cols + c] / cols;
    for (int c = 0; c < cols; ++c) out[r * cols + c] = w[c] * x[r * cols + c] / std::sqrt(mean_square + eps);
  }
  return out;
}

// Runs forward and backward of one case and compares out, d_in and d_weight with the reference. `step` is the
// finite-difference step for x, chosen per case to be far below the scale on which the function bends.
void check_rmsnorm(const Floats& x, int rows, int cols, float eps, double step) {
  const Floats w = random_floats(cols, 11, 0.5f, 1.5f), d_out = random_floats(x.size(), 12);
  const Doubles xd = to_double(x), wd = to_double(w), r = to_double(d_out);

  Floats out(x.size()), rstd(rows);
  cpu::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), rows, cols, eps);
  EXPECT_LT(rel_error(out, reference_rmsnorm(xd, wd, rows, cols, eps)), 1e-5);

  const Doubles want_in =
      finite_diff([&](const Doubles& v) { return dot(reference_rmsnorm(v, wd, rows, cols, eps), r); }, xd, step);
  const Doubles want_w =
      finite_diff([&](const Doubles& v) { return dot(reference_rmsnorm(xd, v, rows, cols, eps), r); }, wd);
  Floats d_in(x.size(), 99.0f);               // overwritten
  Floats w_before = random_floats(cols, 13);  // scaled like the gradient, so the sum stays resolvable in fp32
  for (int c = 0; c < cols; ++c) w_before[c] *= static_cast<float>(std::abs(want_w[c]));
  Floats d_w = w_before;  // accumulated
  cpu::rmsnorm_backward(d_in.data(), d_w.data(), d_out.data(), x.data(), w.data(), rstd.data(), rows, cols);
  EXPECT_LT(rel_error(d_in, want_in), 1e-4);
  EXPECT_LT(rel_error(added(d_w, w_before), want_w), 1e-4);
}

TEST(CpuOpsRmsNorm, ForwardAndBackwardMatchReference) {
  SCOPED_TRACE("rows 4, cols 8");
  check_rmsnorm(random_floats(4 * 8, 10, -2.0f, 2.0f), 4, 8, 1e-6f, 1e-5);
}

TEST(CpuOpsRmsNorm, SingleColumn) {
  // With cols = 1, y = w x / sqrt(x^2 + eps): d y / d x = w eps / (x^2 + eps)^1.5, which fp32 can only resolve
  // where x^2 is not much larger than eps (otherwise the gradient is a cancellation of two ~equal fp32 terms), hence
  // eps = 0.1 for |x| < 1.
  check_rmsnorm(random_floats(6, 14), 6, 1, 0.1f, 1e-5);
}

TEST(CpuOpsRmsNorm, TinyValuesWhereEpsDominates) {
  // |x| ~ 1e-20: x^2 underflows fp32 but mean(x^2) + eps ~ eps, so y ~ w x / sqrt(eps) and d_in ~ w R / sqrt(eps).
  Floats x = random_floats(3 * 5, 15);
  for (float& v : x) v *= 1e-20f;
  check_rmsnorm(x, 3, 5, 1e-6f, 1e-26);
}

TEST(CpuOpsRmsNorm, ZeroRowGivesZeroOutputAndFiniteGradient) {
  // Around x = 0 the function bends on the scale sqrt(eps) = 1e-3, so the difference step must be far below it.
  Floats x = random_floats(2 * 4, 16);
  std::fill(x.begin(), x.begin() + 4, 0.0f);
  check_rmsnorm(x, 2, 4, 1e-6f, 1e-8);
}

TEST(CpuOpsRmsNorm, InPlaceCallsMatchOutOfPlace) {
  // The engine calls forward with out == in and backward with d_in == d_out.
  const int rows = 3, cols = 6;
  const Floats x = random_floats(rows * cols, 17), w = random_floats(cols, 18), d_out = random_floats(rows * cols, 19);
  Floats out(x.size()), rstd(rows), in_place = x;
  cpu::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), rows, cols, 1e-6f);
  cpu::rmsnorm_forward(in_place.data(), rstd.data(), in_place.data(), w.data(), rows, cols, 1e-6f);
  EXPECT_EQ(in_place, out);

  Floats d_in(x.size()), d_w(cols, 0.0f), aliased = d_out;
  cpu::rmsnorm_backward(d_in.data(), d_w.data(), d_out.data(), x.data(), w.data(), rstd.data(), rows, cols);
  cpu::rmsnorm_backward(aliased.data(), d_w.data(), aliased.data(), x.data(), w.data(), rstd.data(), rows, cols);
  EXPECT_EQ(aliased, d_in);
}

}  // namespace
}  // namespace moetune::test
