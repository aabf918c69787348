// Why: the MoE router as Transformers computes it: probs = softmax(logits) in fp32, pick the top-k experts per token,
// optionally renormalise the k weights to sum to 1 (norm_topk_prob; always for Mixtral). The load-balancing loss
// (Switch Transformer, Transformers' load_balancing_loss_func) is computed over all sparse layers at once:
//   aux = E * sum_e f_e * P_e,  f_e = (top-k picks of expert e) / R,  P_e = (sum of probs[., e]) / R,
// where R counts token rows over all sparse layers; f is treated as a constant (one-hot), so d aux / d probs[r, e] =
// E * f_e / R for every row r of every layer.
#pragma once

#include <cstdint>

namespace moetune::cpu {

// probs (tokens, E) from logits (tokens, E); top_index/top_weight (tokens, k). Ties pick the lower expert index.
void router_forward(float* probs, int32_t* top_index, float* top_weight, const float* logits, int tokens, int experts,
                    int top_k, bool renormalize);

// d_logits (tokens, E) overwritten, from d_top_weight (tokens, k) and d_probs_extra (E, may be null): a gradient added
// to every row's probabilities (the load-balancing term).
void router_backward(float* d_logits, const float* d_top_weight, const float* d_probs_extra, const float* probs,
                     const int32_t* top_index, const float* top_weight, int tokens, int experts, int top_k,
                     bool renormalize);

// Adds one layer's statistics: pick_counts (E) += top-k picks, prob_sums (E) += column sums of probs. (double sums)
void router_balance_accumulate(double* pick_counts, double* prob_sums, const float* probs, const int32_t* top_index,
                               int tokens, int experts, int top_k);
// aux = E * sum_e (pick_counts_e / rows) * (prob_sums_e / rows).
double router_balance_loss(const double* pick_counts, const double* prob_sums, double rows, int experts);
// d_probs_extra (E) = scale * d aux / d probs[r, e] = scale * E * pick_counts_e / rows^2.
void router_balance_grad(float* d_probs_extra, const double* pick_counts, double rows, int experts, double scale);

}  // namespace moetune::cpu
