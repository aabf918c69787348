// Why: the CPU ops are the oracle of the engine, so their tests need an oracle of their own. Each test writes the op's
// math as a naive double-precision reference, takes that reference's gradients by central finite differences (in double
// the truncation and rounding error of a 1e-5 step is ~1e-9 of the gradient, far below fp32's ~1e-7), and holds the
// op's fp32 forward and analytic backward to them with a norm-wise relative error.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

namespace moetune::test {

using Doubles = std::vector<double>;
using Floats = std::vector<float>;

// n values uniform in [lo, hi) from a seeded generator, so every run sees the same data.
inline Floats random_floats(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  Floats values(n);
  for (float& v : values) v = dist(gen);
  return values;
}

inline Doubles to_double(const Floats& values) { return Doubles(values.begin(), values.end()); }

// The scalar objective L = sum(out * R) whose gradient with respect to out is R.
inline double dot(const Doubles& a, const Doubles& b) {
  double sum = 0.0;
  for (size_t i = 0; i < a.size(); ++i) sum += a[i] * b[i];
  return sum;
}

// dL/dx_i = (L(x + h e_i) - L(x - h e_i)) / 2h for every i; `loss` maps a full x to L.
template <class Loss>
Doubles finite_diff(const Loss& loss, Doubles x, double step = 1e-5) {
  Doubles grad(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double saved = x[i];
    x[i] = saved + step;
    const double up = loss(x);
    x[i] = saved - step;
    const double down = loss(x);
    x[i] = saved;
    grad[i] = (up - down) / (2 * step);
  }
  return grad;
}

// max_i |got_i - want_i| / max_i |want_i|: relative to the tensor's scale, so elements near zero neither hide an error
// nor fail on rounding. A size mismatch or a non-finite value counts as an infinite error.
inline double rel_error(const Floats& got, const Doubles& want) {
  if (got.size() != want.size()) return INFINITY;
  double diff = 0.0, scale = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    diff = std::max(diff, std::abs(got[i] - want[i]));
    scale = std::max(scale, std::abs(want[i]));
  }
  return scale > 0.0 ? diff / scale : diff;
}

// got - before, elementwise: what an accumulating (+=) output added to its pre-filled buffer.
inline Floats added(const Floats& got, const Floats& before) {
  Floats delta(got.size());
  for (size_t i = 0; i < got.size(); ++i) delta[i] = got[i] - before[i];
  return delta;
}

}  // namespace moetune::test
