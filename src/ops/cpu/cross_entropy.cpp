// Why: see cross_entropy.h. log-sum-exp in double.
#include "ops/cpu/cross_entropy.h"

#include <cmath>
#include <cstring>

namespace moetune::cpu {

namespace {
constexpr int32_t kIgnore = -100;
// Target of position t in a row, or kIgnore.
inline int32_t shifted_target(const int32_t* row_labels, int t, int seq_len) {
  return t + 1 < seq_len ? row_labels[t + 1] : kIgnore;
}
}  // namespace

CrossEntropyResult cross_entropy_forward(float* probs_out, const float* logits, const int32_t* labels, int batch,
                                         int seq_len, int vocab) {
  CrossEntropyResult result;
  for (int b = 0; b < batch; ++b) {
    for (int t = 0; t < seq_len; ++t) {
      const long row = static_cast<long>(b) * seq_len + t;
      const float* l = logits + row * vocab;
      float* p = probs_out + row * vocab;
      float max_logit = l[0];
      for (int v = 1; v < vocab; ++v) max_logit = std::fmax(max_logit, l[v]);
      double sum = 0.0;
      for (int v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(l[v]) - max_logit);
      for (int v = 0; v < vocab; ++v) p[v] = static_cast<float>(std::exp(static_cast<double>(l[v]) - max_logit) / sum);
      const int32_t target = shifted_target(labels + static_cast<long>(b) * seq_len, t, seq_len);
      if (target == kIgnore) continue;
      result.loss_sum += std::log(sum) + max_logit - l[target];
      ++result.counted;
    }
  }
  return result;
}

void cross_entropy_backward(float* d_logits, const float* probs, const int32_t* labels, int batch, int seq_len, int vocab,
                            float scale) {
  for (int b = 0; b < batch; ++b) {
    for (int t = 0; t < seq_len; ++t) {
      const long row = static_cast<long>(b) * seq_len + t;
      float* d = d_logits + row * vocab;
      const int32_t target = shifted_target(labels + static_cast<long>(b) * seq_len, t, seq_len);
      if (target == kIgnore) {
        std::memset(d, 0, sizeof(float) * vocab);
        continue;
      }
      for (int v = 0; v < vocab; ++v) d[v] = scale * probs[row * vocab + v];
      d[target] -= scale;
    }
  }
}

}  // namespace moetune::cpu
