// Why: a rotary embedding with the wrong pairing (interleaved instead of rotate_half), frequency exponent or sign
// silently degrades a fine-tuned model rather than breaking it, so rope_apply is checked against Transformers' formula
// written out in double: inv_freq_i = 1 / theta^(2i/D), x' = x * cos + rotate_half(x) * sin with rotate_half(x1, x2) =
// (-x2, x1). Its backward (inverse = true) must be the gradient of sum(rope(x) * R), taken by finite differences.
// Tolerance 2e-5: the op forms angles in fp32 like Transformers does, so an angle pos * inv_freq (<= 60 rad here) is
// off by up to ~60 * 2^-24 ~ 4e-6 rad.
#include <gtest/gtest.h>

#include <cmath>

#include "op_test_util.h"
#include "ops/cpu/rope.h"

namespace moetune::test {
namespace {

constexpr int kTokens = 4, kHeads = 3, kDim = 8;
const int32_t kPositions[kTokens] = {0, 1, 7, 60};

Doubles reference_rope(const Doubles& x, double theta) {
  const int half = kDim / 2;
  Doubles out(x.size());
  for (int t = 0; t < kTokens; ++t)
    for (int h = 0; h < kHeads; ++h) {
      const double* v = x.data() + (t * kHeads + h) * kDim;
      double* o = out.data() + (t * kHeads + h) * kDim;
      for (int d = 0; d < kDim; ++d) {
        const double angle = kPositions[t] / std::pow(theta, 2.0 * (d % half) / kDim);
        const double rotated = d < half ? -v[d + half] : v[d - half];
        o[d] = v[d] * std::cos(angle) + rotated * std::sin(angle);
      }
    }
  return out;
}

TEST(CpuOpsRope, ForwardMatchesRotateHalfReference) {
  for (double theta : {10000.0, 1000000.0}) {
    SCOPED_TRACE(theta);
    const Floats x = random_floats(kTokens * kHeads * kDim, 21);
    Floats out = x;
    cpu::rope_apply(out.data(), kPositions, kTokens, kHeads, kDim, theta, false);
    EXPECT_LT(rel_error(out, reference_rope(to_double(x), theta)), 2e-5);
  }
}

TEST(CpuOpsRope, InverseIsTheGradient) {
  const double theta = 10000.0;
  const Floats x = random_floats(kTokens * kHeads * kDim, 22), r = random_floats(x.size(), 23);
  const Doubles want =
      finite_diff([&](const Doubles& v) { return dot(reference_rope(v, theta), to_double(r)); }, to_double(x));
  Floats grad = r;
  cpu::rope_apply(grad.data(), kPositions, kTokens, kHeads, kDim, theta, true);
  EXPECT_LT(rel_error(grad, want), 2e-5);
}

}  // namespace
}  // namespace moetune::test
