// Why: see rope.h. Frequencies and angles are formed in fp32 in the same order Transformers uses
// (inv_freq = 1 / theta^(2i/D), angle = inv_freq * position), so cos/sin agree with it to the last bit or so.
#include "ops/cpu/rope.h"

#include <cmath>
#include <vector>

namespace moetune::cpu {

void rope_apply(float* x, const int32_t* positions, int tokens, int heads, int head_dim, double theta, bool inverse) {
  const int half = head_dim / 2;
  std::vector<float> inv_freq(half);
  for (int i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    inv_freq[i] = 1.0f / std::pow(static_cast<float>(theta), exponent);
  }
  std::vector<float> cos_table(half), sin_table(half);
  for (int t = 0; t < tokens; ++t) {
    for (int i = 0; i < half; ++i) {
      const float angle = inv_freq[i] * static_cast<float>(positions[t]);
      cos_table[i] = std::cos(angle);
      sin_table[i] = inverse ? -std::sin(angle) : std::sin(angle);
    }
    for (int h = 0; h < heads; ++h) {
      float* v = x + (static_cast<long>(t) * heads + h) * head_dim;
      for (int i = 0; i < half; ++i) {
        const float x1 = v[i], x2 = v[i + half];
        v[i] = x1 * cos_table[i] - x2 * sin_table[i];
        v[i + half] = x2 * cos_table[i] + x1 * sin_table[i];
      }
    }
  }
}

}  // namespace moetune::cpu
