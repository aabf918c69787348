// Why: see router.h. A token's E logits fit in one warp's registers (expert e lives in lane e % 32, slot e / 32), so
// softmax, top-k and the backward are warp shuffles only; every loop over slots is unrolled so the arrays stay in
// registers. Padding slots (e >= E) hold -1, below every probability, and are never picked.
#include <climits>
#include <cmath>

#include "ops/cuda/cuda_check.h"
#include "ops/cuda/router.h"

namespace moetune::cuda {
namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kWarp = 32;
constexpr int kPerLane = kRouterMaxExperts / kWarp;  // 8 experts per lane
constexpr int kWarpsPerBlock = 8;                    // 256 threads, one token per warp
constexpr int kStatsTokensPerBlock = 128;
constexpr int kStatsThreads = 256;

__device__ inline float warp_sum(float value) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) value += __shfl_xor_sync(kFullMask, value, offset);
  return value;
}

__device__ inline float warp_max(float value) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) value = fmaxf(value, __shfl_xor_sync(kFullMask, value, offset));
  return value;
}

__global__ void router_forward_kernel(float* probs, int32_t* top_index, float* top_weight, const float* logits,
                                      int tokens, int experts, int top_k, bool renormalize) {
  const int lane = threadIdx.x % kWarp;
  const long t = static_cast<long>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  if (t >= tokens) return;  // whole warps leave together
  const float* l = logits + t * experts;
  float* p = probs + t * experts;

  float v[kPerLane];
  float max_logit = -INFINITY;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int e = lane + kWarp * i;
    v[i] = e < experts ? l[e] : -INFINITY;
    max_logit = fmaxf(max_logit, v[i]);
  }
  max_logit = warp_max(max_logit);
  float sum = 0.0f;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int e = lane + kWarp * i;
    v[i] = e < experts ? expf(v[i] - max_logit) : 0.0f;
    sum += v[i];
  }
  sum = warp_sum(sum);
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int e = lane + kWarp * i;
    if (e < experts) {
      v[i] = v[i] / sum;
      p[e] = v[i];
    } else {
      v[i] = -1.0f;  // never picked
    }
  }

  // Top-k: k rounds of a warp arg-max over the untaken experts; lane j keeps the j-th pick.
  int my_index = 0;
  float my_weight = 0.0f;
  for (int j = 0; j < top_k; ++j) {
    float best = -1.0f;  // taken and padding slots hold -1 and never win the strict comparison
    int best_e = INT_MAX;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i)
      if (v[i] > best) {  // strict: within a lane the lower expert wins a tie
        best = v[i];
        best_e = lane + kWarp * i;
      }
    for (int offset = kWarp / 2; offset > 0; offset /= 2) {
      const float other = __shfl_xor_sync(kFullMask, best, offset);
      const int other_e = __shfl_xor_sync(kFullMask, best_e, offset);
      if (other > best || (other == best && other_e < best_e)) {
        best = other;
        best_e = other_e;
      }
    }
#pragma unroll
    for (int i = 0; i < kPerLane; ++i)
      if (lane + kWarp * i == best_e) v[i] = -1.0f;
    if (lane == j) {
      my_index = best_e;
      my_weight = best;
    }
  }
  const float picked_sum = warp_sum(lane < top_k ? my_weight : 0.0f);
  if (lane < top_k) {
    top_index[t * top_k + lane] = my_index;
    top_weight[t * top_k + lane] = renormalize ? my_weight / picked_sum : my_weight;
  }
}

__global__ void router_backward_kernel(float* d_logits, const float* d_top_weight, const float* d_probs_extra,
                                       const float* probs, const int32_t* top_index, const float* top_weight,
                                       int tokens, int experts, int top_k, bool renormalize) {
  const int lane = threadIdx.x % kWarp;
  const long t = static_cast<long>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  if (t >= tokens) return;
  const float* p_row = probs + t * experts;

  float p[kPerLane], dp[kPerLane];
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int e = lane + kWarp * i;
    p[i] = e < experts ? p_row[e] : 0.0f;
    dp[i] = (e < experts && d_probs_extra) ? d_probs_extra[e] : 0.0f;
  }
  int index = 0;
  float dw = 0.0f, w = 0.0f;
  if (lane < top_k) {
    index = top_index[t * top_k + lane];
    dw = d_top_weight[t * top_k + lane];
    w = top_weight[t * top_k + lane];
  }
  float contribution = dw;
  if (renormalize) {
    // w_j = v_j / S  =>  dv_j = (dw_j - sum_m dw_m w_m) / S, with S = sum_j v_j.
    const float weighted = warp_sum(dw * w);
    const float picked_sum = warp_sum(lane < top_k ? p_row[index] : 0.0f);
    contribution = (dw - weighted) / picked_sum;
  }
  for (int j = 0; j < top_k; ++j) {  // in slot order, as the CPU twin (also correct for repeated experts)
    const int e_j = __shfl_sync(kFullMask, index, j);
    const float c_j = __shfl_sync(kFullMask, contribution, j);
#pragma unroll
    for (int i = 0; i < kPerLane; ++i)
      if (lane + kWarp * i == e_j) dp[i] += c_j;
  }
  float dot = 0.0f;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) dot += dp[i] * p[i];
  dot = warp_sum(dot);
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int e = lane + kWarp * i;
    if (e < experts) d_logits[t * experts + e] = p[i] * (dp[i] - dot);
  }
}

int stats_blocks(int tokens) { return (tokens + kStatsTokensPerBlock - 1) / kStatsTokensPerBlock; }

// Block b writes partial[b] = (column sums of its tokens' probs (E), its pick counts (E) as exact floats).
__global__ void balance_partials_kernel(float* partials, const float* probs, const int32_t* top_index, int tokens,
                                        int experts, int top_k) {
  __shared__ int counts[kRouterMaxExperts];
  const long begin = static_cast<long>(blockIdx.x) * kStatsTokensPerBlock;
  const long end = begin + kStatsTokensPerBlock < tokens ? begin + kStatsTokensPerBlock : tokens;
  for (int e = threadIdx.x; e < experts; e += blockDim.x) counts[e] = 0;
  __syncthreads();
  for (long i = begin * top_k + threadIdx.x; i < end * top_k; i += blockDim.x) {
    const int e = top_index[i];
    if (e >= 0 && e < experts) atomicAdd(&counts[e], 1);  // integer: order-independent
  }
  float* partial = partials + static_cast<long>(blockIdx.x) * 2 * experts;
  for (int e = threadIdx.x; e < experts; e += blockDim.x) {
    float sum = 0.0f;
    for (long t = begin; t < end; ++t) sum += probs[t * experts + e];
    partial[e] = sum;
  }
  __syncthreads();
  for (int e = threadIdx.x; e < experts; e += blockDim.x) partial[experts + e] = static_cast<float>(counts[e]);
}

__global__ void balance_reduce_kernel(float* pick_counts, float* prob_sums, const float* partials, int blocks,
                                      int experts) {
  for (int e = threadIdx.x; e < experts; e += blockDim.x) {
    float sum = 0.0f, count = 0.0f;
    for (int b = 0; b < blocks; ++b) {
      sum += partials[static_cast<long>(b) * 2 * experts + e];
      count += partials[static_cast<long>(b) * 2 * experts + experts + e];
    }
    prob_sums[e] += sum;
    pick_counts[e] += count;
  }
}

__global__ void balance_loss_kernel(float* aux, float* d_probs_extra, const float* pick_counts, const float* prob_sums,
                                    double rows, int experts, double scale) {
  __shared__ double partial[kStatsThreads];
  double sum = 0.0;
  for (int e = threadIdx.x; e < experts; e += blockDim.x) {
    const double count = pick_counts[e];
    sum += (count / rows) * (prob_sums[e] / rows);
    if (d_probs_extra) d_probs_extra[e] = static_cast<float>(scale * experts * count / (rows * rows));
  }
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int stride = kStatsThreads / 2; stride > 0; stride /= 2) {
    if (static_cast<int>(threadIdx.x) < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0 && aux) *aux = static_cast<float>(partial[0] * experts);
}

void check_router_shape(int experts, int top_k) {
  MT_ASSERT(experts >= 1 && experts <= kRouterMaxExperts);
  MT_ASSERT(top_k >= 1 && top_k <= kRouterMaxTopK && top_k <= experts);
}

}  // namespace

void router_forward(float* probs, int32_t* top_index, float* top_weight, const float* logits, int tokens, int experts,
                    int top_k, bool renormalize, cudaStream_t stream) {
  check_router_shape(experts, top_k);
  if (tokens <= 0) return;
  const int blocks = (tokens + kWarpsPerBlock - 1) / kWarpsPerBlock;
  router_forward_kernel<<<blocks, kWarpsPerBlock * kWarp, 0, stream>>>(probs, top_index, top_weight, logits, tokens,
                                                                       experts, top_k, renormalize);
  CUDA_CHECK_LAUNCH("router_forward_kernel");
}

size_t router_balance_scratch_floats(int tokens, int experts) {
  return tokens > 0 ? static_cast<size_t>(stats_blocks(tokens)) * 2 * experts : 0;
}

void router_balance_stats(float* pick_counts, float* prob_sums, const float* probs, const int32_t* top_index,
                          int tokens, int experts, int top_k, float* scratch, cudaStream_t stream) {
  check_router_shape(experts, top_k);
  if (tokens <= 0) return;
  const int blocks = stats_blocks(tokens);
  balance_partials_kernel<<<blocks, kStatsThreads, 0, stream>>>(scratch, probs, top_index, tokens, experts, top_k);
  CUDA_CHECK_LAUNCH("balance_partials_kernel");
  balance_reduce_kernel<<<1, kStatsThreads, 0, stream>>>(pick_counts, prob_sums, scratch, blocks, experts);
  CUDA_CHECK_LAUNCH("balance_reduce_kernel");
}

void router_backward(float* d_logits, const float* d_top_weight, const float* d_probs_extra, const float* probs,
                     const int32_t* top_index, const float* top_weight, int tokens, int experts, int top_k,
                     bool renormalize, cudaStream_t stream) {
  check_router_shape(experts, top_k);
  if (tokens <= 0) return;
  const int blocks = (tokens + kWarpsPerBlock - 1) / kWarpsPerBlock;
  router_backward_kernel<<<blocks, kWarpsPerBlock * kWarp, 0, stream>>>(
      d_logits, d_top_weight, d_probs_extra, probs, top_index, top_weight, tokens, experts, top_k, renormalize);
  CUDA_CHECK_LAUNCH("router_backward_kernel");
}

void router_balance_loss_and_grad(float* aux, float* d_probs_extra, const float* pick_counts, const float* prob_sums,
                                  double rows, int experts, double scale, cudaStream_t stream) {
  MT_ASSERT(experts >= 1 && rows > 0);
  balance_loss_kernel<<<1, kStatsThreads, 0, stream>>>(aux, d_probs_extra, pick_counts, prob_sums, rows, experts,
                                                       scale);
  CUDA_CHECK_LAUNCH("balance_loss_kernel");
}

}  // namespace moetune::cuda
