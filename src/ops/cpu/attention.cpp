// Why: see attention.h. Plain loops: the CPU backend serves tiny models and is the oracle, so clarity beats speed here.
#include "ops/cpu/attention.h"

#include <cmath>
#include <cstring>
#include <vector>

namespace moetune::cpu {

namespace {
// `first` is the query's document start (0 when the row is one sequence).
inline bool visible(int query, int key, int window, int first) {
  return key <= query && key >= first && (window == 0 || query - key < window);
}
}  // namespace

void attention_forward(float* out, float* probs, const float* q, const float* k, const float* v, const AttentionShape& s,
                       const int32_t* doc_start) {
  const int T = s.seq_len, D = s.head_dim, group = s.heads / s.kv_heads;
  const long q_row = static_cast<long>(s.heads) * D, kv_row = static_cast<long>(s.kv_heads) * D;
  for (int b = 0; b < s.batch; ++b) {
    for (int h = 0; h < s.heads; ++h) {
      const int kvh = h / group;
      for (int i = 0; i < T; ++i) {
        const int first = doc_start ? doc_start[static_cast<long>(b) * T + i] : 0;
        const float* qi = q + (static_cast<long>(b) * T + i) * q_row + h * D;
        float* p = probs + ((static_cast<long>(b) * s.heads + h) * T + i) * T;
        double max_score = -INFINITY;
        for (int j = 0; j < T; ++j) {
          if (!visible(i, j, s.window, first)) {
            p[j] = 0.0f;
            continue;
          }
          const float* kj = k + (static_cast<long>(b) * T + j) * kv_row + kvh * D;
          double dot = 0.0;
          for (int d = 0; d < D; ++d) dot += static_cast<double>(qi[d]) * kj[d];
          p[j] = static_cast<float>(dot * s.scale);
          if (p[j] > max_score) max_score = p[j];
        }
        double sum = 0.0;
        for (int j = 0; j < T; ++j)
          if (visible(i, j, s.window, first)) sum += std::exp(p[j] - max_score);
        for (int j = 0; j < T; ++j)
          if (visible(i, j, s.window, first)) p[j] = static_cast<float>(std::exp(p[j] - max_score) / sum);
        float* oi = out + (static_cast<long>(b) * T + i) * q_row + h * D;
        for (int d = 0; d < D; ++d) {
          double acc = 0.0;
          for (int j = first; j <= i; ++j) acc += static_cast<double>(p[j]) * v[(static_cast<long>(b) * T + j) * kv_row + kvh * D + d];
          oi[d] = static_cast<float>(acc);
        }
      }
    }
  }
}

void attention_backward(float* d_q, float* d_k, float* d_v, const float* d_out, const float* q, const float* k,
                        const float* v, const float* probs, const AttentionShape& s, const int32_t* doc_start) {
  const int T = s.seq_len, D = s.head_dim, group = s.heads / s.kv_heads;
  const long q_row = static_cast<long>(s.heads) * D, kv_row = static_cast<long>(s.kv_heads) * D;
  std::memset(d_k, 0, sizeof(float) * s.batch * T * kv_row);
  std::memset(d_v, 0, sizeof(float) * s.batch * T * kv_row);
  std::vector<double> d_scores(T);
  for (int b = 0; b < s.batch; ++b) {
    for (int h = 0; h < s.heads; ++h) {
      const int kvh = h / group;
      for (int i = 0; i < T; ++i) {
        const int first = doc_start ? doc_start[static_cast<long>(b) * T + i] : 0;
        const float* p = probs + ((static_cast<long>(b) * s.heads + h) * T + i) * T;
        const float* doi = d_out + (static_cast<long>(b) * T + i) * q_row + h * D;
        const float* qi = q + (static_cast<long>(b) * T + i) * q_row + h * D;
        double weighted = 0.0;  // sum_j p_j * dP_j
        for (int j = first; j <= i; ++j) {
          const float* vj = v + (static_cast<long>(b) * T + j) * kv_row + kvh * D;
          double dp = 0.0;
          for (int d = 0; d < D; ++d) dp += static_cast<double>(doi[d]) * vj[d];
          d_scores[j] = dp;
          weighted += p[j] * dp;
        }
        float* dqi = d_q + (static_cast<long>(b) * T + i) * q_row + h * D;
        std::vector<double> dq(D, 0.0);
        for (int j = first; j <= i; ++j) {
          if (!visible(i, j, s.window, first)) continue;
          const double ds = p[j] * (d_scores[j] - weighted) * s.scale;
          const long kv_offset = (static_cast<long>(b) * T + j) * kv_row + kvh * D;
          for (int d = 0; d < D; ++d) {
            dq[d] += ds * k[kv_offset + d];
            d_k[kv_offset + d] += static_cast<float>(ds * qi[d]);
            d_v[kv_offset + d] += p[j] * doi[d];
          }
        }
        for (int d = 0; d < D; ++d) dqi[d] = static_cast<float>(dq[d]);
      }
    }
  }
}

}  // namespace moetune::cpu
