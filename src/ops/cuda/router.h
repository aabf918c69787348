// Why: the MoE router on the GPU, the twin of ops/cpu/router.h (same formulas, same tie rule): probs = softmax(logits)
// in fp32, the top-k experts per token (ties pick the lower expert index), optionally renormalised to sum to 1; its
// backward; and the load-balancing statistics, loss and gradient (Switch Transformer, see the CPU twin's header):
//   aux = E * sum_e (pick_counts_e / R) * (prob_sums_e / R),  d aux / d probs[r, e] = E * pick_counts_e / R^2.
// One warp per token (E <= 256 experts, 8 per lane in registers; k <= 16). Everything is deterministic: no float
// atomics, fixed reduction orders, so two runs give bitwise identical results.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace moetune::cuda {

constexpr int kRouterMaxExperts = 256;
constexpr int kRouterMaxTopK = 16;

// probs (tokens, E), top_index (tokens, k), top_weight (tokens, k), all overwritten, from logits (tokens, E) fp32.
// Requires 1 <= experts <= 256 and 1 <= top_k <= min(16, experts).
void router_forward(float* probs, int32_t* top_index, float* top_weight, const float* logits, int tokens, int experts,
                    int top_k, bool renormalize, cudaStream_t stream);

// Floats of scratch router_balance_stats needs: 2 * E * ceil(tokens / 128) (per-block partials).
size_t router_balance_scratch_floats(int tokens, int experts);

// Adds one layer's statistics: pick_counts (E) += top-k picks per expert, prob_sums (E) += column sums of probs
// (tokens, E); top_index (tokens, k). scratch: router_balance_scratch_floats(tokens, experts) floats. Blocks of 128
// tokens write partials, then one fixed-order pass adds them: the result does not depend on scheduling. Counts are
// exact while each stays below 2^24.
void router_balance_stats(float* pick_counts, float* prob_sums, const float* probs, const int32_t* top_index,
                          int tokens, int experts, int top_k, float* scratch, cudaStream_t stream);

// d_logits (tokens, E) overwritten, from d_top_weight (tokens, k) and d_probs_extra (E, may be null: a gradient added
// to every row's probabilities, the load-balancing term); probs, top_index, top_weight as router_forward wrote them.
void router_backward(float* d_logits, const float* d_top_weight, const float* d_probs_extra, const float* probs,
                     const int32_t* top_index, const float* top_weight, int tokens, int experts, int top_k,
                     bool renormalize, cudaStream_t stream);

// From the statistics accumulated over all sparse layers (pick_counts, prob_sums: (E) on the device) and the number of
// token rows over those layers (rows, host): aux (a device scalar, may be null) = E * sum_e (pick_counts_e / rows) *
// (prob_sums_e / rows), unscaled as cpu::router_balance_loss; d_probs_extra (E, may be null) = scale * E *
// pick_counts_e / rows^2, as cpu::router_balance_grad. One block, computed in double, fixed-order sum.
void router_balance_loss_and_grad(float* aux, float* d_probs_extra, const float* pick_counts, const float* prob_sums,
                                  double rows, int experts, double scale, cudaStream_t stream);

}  // namespace moetune::cuda
