// Why: see router.h.
#include "ops/cpu/router.h"

#include <cmath>
#include <vector>

namespace moetune::cpu {

void router_forward(float* probs, int32_t* top_index, float* top_weight, const float* logits, int tokens, int experts,
                    int top_k, bool renormalize) {
  std::vector<bool> taken(experts);
  for (long t = 0; t < tokens; ++t) {
    const float* l = logits + t * experts;
    float* p = probs + t * experts;
    float max_logit = l[0];
    for (int e = 1; e < experts; ++e) max_logit = std::fmax(max_logit, l[e]);
    double sum = 0.0;
    for (int e = 0; e < experts; ++e) sum += std::exp(static_cast<double>(l[e]) - max_logit);
    for (int e = 0; e < experts; ++e) p[e] = static_cast<float>(std::exp(static_cast<double>(l[e]) - max_logit) / sum);

    std::fill(taken.begin(), taken.end(), false);
    double picked_sum = 0.0;
    for (int j = 0; j < top_k; ++j) {
      int best = -1;
      for (int e = 0; e < experts; ++e)
        if (!taken[e] && (best < 0 || p[e] > p[best])) best = e;
      taken[best] = true;
      top_index[t * top_k + j] = best;
      top_weight[t * top_k + j] = p[best];
      picked_sum += p[best];
    }
    if (renormalize)
      for (int j = 0; j < top_k; ++j) top_weight[t * top_k + j] = static_cast<float>(top_weight[t * top_k + j] / picked_sum);
  }
}

void router_backward(float* d_logits, const float* d_top_weight, const float* d_probs_extra, const float* probs,
                     const int32_t* top_index, const float* top_weight, int tokens, int experts, int top_k,
                     bool renormalize) {
  std::vector<double> d_probs(experts);
  for (long t = 0; t < tokens; ++t) {
    const float* p = probs + t * experts;
    const float* dw = d_top_weight + t * top_k;
    const float* w = top_weight + t * top_k;
    for (int e = 0; e < experts; ++e) d_probs[e] = d_probs_extra ? d_probs_extra[e] : 0.0;
    if (renormalize) {
      // w_j = v_j / S  =>  dv_j = (dw_j - sum_m dw_m w_m) / S, with S = sum_j v_j.
      double weighted = 0.0, picked_sum = 0.0;
      for (int j = 0; j < top_k; ++j) {
        weighted += static_cast<double>(dw[j]) * w[j];
        picked_sum += p[top_index[t * top_k + j]];
      }
      for (int j = 0; j < top_k; ++j) d_probs[top_index[t * top_k + j]] += (dw[j] - weighted) / picked_sum;
    } else {
      for (int j = 0; j < top_k; ++j) d_probs[top_index[t * top_k + j]] += dw[j];
    }
    double dot = 0.0;
    for (int e = 0; e < experts; ++e) dot += d_probs[e] * p[e];
    for (int e = 0; e < experts; ++e) d_logits[t * experts + e] = static_cast<float>(p[e] * (d_probs[e] - dot));
  }
}

void router_balance_accumulate(double* pick_counts, double* prob_sums, const float* probs, const int32_t* top_index,
                               int tokens, int experts, int top_k) {
  for (long t = 0; t < tokens; ++t) {
    for (int j = 0; j < top_k; ++j) pick_counts[top_index[t * top_k + j]] += 1.0;
    for (int e = 0; e < experts; ++e) prob_sums[e] += probs[t * experts + e];
  }
}

double router_balance_loss(const double* pick_counts, const double* prob_sums, double rows, int experts) {
  double total = 0.0;
  for (int e = 0; e < experts; ++e) total += (pick_counts[e] / rows) * (prob_sums[e] / rows);
  return total * experts;
}

void router_balance_grad(float* d_probs_extra, const double* pick_counts, double rows, int experts, double scale) {
  for (int e = 0; e < experts; ++e) d_probs_extra[e] = static_cast<float>(scale * experts * pick_counts[e] / (rows * rows));
}

}  // namespace moetune::cpu
