// Why: every projection of the model goes through linear_forward/backward (BLAS with transposes and a beta), so a wrong
// transpose, leading dimension or accumulate flag would corrupt all of them. Checked against y = x W^T + b in double
// and its finite-difference gradients. Tolerances: forward 1e-5 (fp32 dot products of length <= 7 round to ~1e-7);
// gradients 1e-4 (fp32 analytic backward vs a ~1e-9-accurate double difference quotient, with margin).
#include <gtest/gtest.h>

#include "op_test_util.h"
#include "ops/cpu/linear.h"

namespace moetune::test {
namespace {

constexpr int kRows = 5, kIn = 7, kOut = 3;

// out (rows, out) = in (rows, in) W^T (out, in) + b (out).
Doubles reference_linear(const Doubles& in, const Doubles& weight, const Doubles& bias) {
  Doubles out(kRows * kOut);
  for (int r = 0; r < kRows; ++r)
    for (int o = 0; o < kOut; ++o) {
      double acc = bias[o];
      for (int i = 0; i < kIn; ++i) acc += in[r * kIn + i] * weight[o * kIn + i];
      out[r * kOut + o] = acc;
    }
  return out;
}

struct LinearCase {
  Floats in = random_floats(kRows * kIn, 1), weight = random_floats(kOut * kIn, 2), bias = random_floats(kOut, 3);
  Floats d_out = random_floats(kRows * kOut, 4);  // R of L = sum(out * R)
};

TEST(CpuOpsLinear, ForwardMatchesReferenceWithAndWithoutBias) {
  LinearCase c;
  Floats out(kRows * kOut, 99.0f);
  cpu::linear_forward(out.data(), c.in.data(), c.weight.data(), c.bias.data(), kRows, kIn, kOut);
  EXPECT_LT(rel_error(out, reference_linear(to_double(c.in), to_double(c.weight), to_double(c.bias))), 1e-5);

  cpu::linear_forward(out.data(), c.in.data(), c.weight.data(), nullptr, kRows, kIn, kOut);
  EXPECT_LT(rel_error(out, reference_linear(to_double(c.in), to_double(c.weight), Doubles(kOut, 0.0))), 1e-5);
}

TEST(CpuOpsLinear, ForwardBetaOneAddsToOut) {
  LinearCase c;
  const Floats before = random_floats(kRows * kOut, 5);
  Floats out = before;
  cpu::linear_forward(out.data(), c.in.data(), c.weight.data(), c.bias.data(), kRows, kIn, kOut, 1.0f);
  EXPECT_LT(rel_error(added(out, before), reference_linear(to_double(c.in), to_double(c.weight), to_double(c.bias))),
            1e-5);
}

TEST(CpuOpsLinear, BackwardMatchesFiniteDifferences) {
  LinearCase c;
  const Doubles in = to_double(c.in), weight = to_double(c.weight), bias = to_double(c.bias), r = to_double(c.d_out);
  const Doubles want_in = finite_diff([&](const Doubles& x) { return dot(reference_linear(x, weight, bias), r); }, in);
  const Doubles want_w = finite_diff([&](const Doubles& w) { return dot(reference_linear(in, w, bias), r); }, weight);
  const Doubles want_b = finite_diff([&](const Doubles& b) { return dot(reference_linear(in, weight, b), r); }, bias);

  // d_in overwritten (its pre-filled garbage must vanish); d_weight, d_bias accumulated onto what they held.
  Floats d_in(kRows * kIn, 99.0f);
  const Floats w_before = random_floats(kOut * kIn, 6), b_before = random_floats(kOut, 7);
  Floats d_w = w_before, d_b = b_before;
  cpu::linear_backward(d_in.data(), d_w.data(), d_b.data(), c.d_out.data(), c.in.data(), c.weight.data(), kRows, kIn,
                       kOut);
  EXPECT_LT(rel_error(d_in, want_in), 1e-4);
  EXPECT_LT(rel_error(added(d_w, w_before), want_w), 1e-4);
  EXPECT_LT(rel_error(added(d_b, b_before), want_b), 1e-4);

  // accumulate_d_in = true adds onto d_in; a null d_in and d_bias are allowed.
  const Floats in_before = random_floats(kRows * kIn, 8);
  d_in = in_before;
  cpu::linear_backward(d_in.data(), d_w.data(), nullptr, c.d_out.data(), c.in.data(), c.weight.data(), kRows, kIn, kOut,
                       true);
  EXPECT_LT(rel_error(added(d_in, in_before), want_in), 1e-4);
  Floats d_w_only(kOut * kIn, 0.0f);
  cpu::linear_backward(nullptr, d_w_only.data(), nullptr, c.d_out.data(), c.in.data(), c.weight.data(), kRows, kIn,
                       kOut);
  EXPECT_LT(rel_error(d_w_only, want_w), 1e-4);
}

}  // namespace
}  // namespace moetune::test
