// Why: see moe_permute.h. The routing is a counting sort done as two launches: one block counts the picks per expert
// and scans them into expert_offsets; then block e walks all (token, slot) pairs in order and places the pairs that
// picked e with a block-wide prefix count (warp ballots), which is stable, so it reproduces the CPU twin's order
// exactly. That is E x N*k reads of top_index (from L2), cheap for E <= 256 and N*k <= 64k, and a block stops as soon
// as its expert's rows are placed. The row ops run one block per token (combines) or per row (gather, combine
// backward), 16-byte vectors of 8 bf16 when H % 8 == 0 and the pointers are 16-byte aligned, scalars otherwise.
#include <climits>

#include "ops/cuda/moe_permute.h"

namespace moetune::cuda {
namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kWarp = 32;
constexpr int kCountThreads = 1024;
constexpr int kScatterThreads = 1024;
constexpr int kScatterWarps = kScatterThreads / kWarp;
constexpr int kRowThreads = 128;
constexpr int kRowWarps = kRowThreads / kWarp;

__global__ void routing_offsets_kernel(int32_t* expert_offsets, const int32_t* top_index, int total, int experts) {
  __shared__ int counts[kMoeMaxExperts];
  for (int e = threadIdx.x; e < experts; e += blockDim.x) counts[e] = 0;
  __syncthreads();
  for (int i = threadIdx.x; i < total; i += blockDim.x) {
    const int e = top_index[i];
    if (e >= 0 && e < experts) atomicAdd(&counts[e], 1);  // integer: order-independent
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int offset = 0;
    for (int e = 0; e < experts; ++e) {
      expert_offsets[e] = offset;
      offset += counts[e];
    }
    expert_offsets[experts] = offset;
  }
}

// Block e: the pairs i = t * k + j with top_index[i] == e get rows expert_offsets[e] + (matches before i), in order.
__global__ void routing_scatter_kernel(int32_t* row_token, int32_t* row_slot, int32_t* token_slot_row,
                                       const int32_t* expert_offsets, const int32_t* top_index, int total, int top_k) {
  __shared__ int warp_counts[kScatterWarps];
  const int expert = blockIdx.x, warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int first_row = expert_offsets[expert], count = expert_offsets[expert + 1] - first_row;
  int placed = 0;  // the same in every thread, so the loop condition is uniform
  for (int base = 0; base < total && placed < count; base += kScatterThreads) {
    const int i = base + static_cast<int>(threadIdx.x);
    const bool match = i < total && top_index[i] == expert;
    const unsigned ballot = __ballot_sync(kFullMask, match);
    if (lane == 0) warp_counts[warp] = __popc(ballot);
    __syncthreads();
    int before = 0, in_block = 0;
    for (int w = 0; w < kScatterWarps; ++w) {
      const int c = warp_counts[w];
      before += w < warp ? c : 0;
      in_block += c;
    }
    if (match) {
      const int row = first_row + placed + before + __popc(ballot & ((1u << lane) - 1u));
      row_token[row] = i / top_k;
      row_slot[row] = i % top_k;
      token_slot_row[i] = row;
    }
    placed += in_block;
    __syncthreads();  // warp_counts is rewritten by the next round
  }
}

// kVec = 8: one uint4 of 8 bf16; kVec = 1: one bf16.
template <int kVec>
__device__ inline void load_f32(float (&out)[kVec], const bf16* src) {
  if constexpr (kVec == 8) {
    const uint4 raw = *reinterpret_cast<const uint4*>(src);
    const __nv_bfloat162* pairs = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 f = __bfloat1622float2(pairs[i]);
      out[2 * i] = f.x;
      out[2 * i + 1] = f.y;
    }
  } else {
#pragma unroll
    for (int i = 0; i < kVec; ++i) out[i] = __bfloat162float(src[i]);
  }
}

template <int kVec>
__device__ inline void store_bf16(bf16* dst, const float (&in)[kVec]) {
  if constexpr (kVec == 8) {
    uint4 raw;
    __nv_bfloat162* pairs = reinterpret_cast<__nv_bfloat162*>(&raw);
#pragma unroll
    for (int i = 0; i < 4; ++i) pairs[i] = __floats2bfloat162_rn(in[2 * i], in[2 * i + 1]);
    *reinterpret_cast<uint4*>(dst) = raw;
  } else {
#pragma unroll
    for (int i = 0; i < kVec; ++i) dst[i] = __float2bfloat16_rn(in[i]);
  }
}

// Block r copies row row_token[r] of x; V is the unit of copy (uint4 or bf16), units = H * sizeof(bf16) / sizeof(V).
template <class V>
__global__ void gather_kernel(V* rows_out, const V* x, const int32_t* row_token, int units) {
  const long r = blockIdx.x;
  const V* src = x + static_cast<long>(row_token[r]) * units;
  V* dst = rows_out + r * units;
  for (int u = threadIdx.x; u < units; u += blockDim.x) dst[u] = src[u];
}

// Block t: out[t] = sum_j weight[t, j] * rows[token_slot_row[t, j]] (weight 1 when weights is null), fp32 by slot.
template <int kVec>
__global__ void combine_kernel(bf16* out, const bf16* rows, const float* weights, const int32_t* token_slot_row,
                               int hidden, int top_k) {
  __shared__ long row_of[kMoeMaxTopK];
  __shared__ float weight_of[kMoeMaxTopK];
  const long t = blockIdx.x;
  if (static_cast<int>(threadIdx.x) < top_k) {
    row_of[threadIdx.x] = token_slot_row[t * top_k + threadIdx.x];
    weight_of[threadIdx.x] = weights ? weights[t * top_k + threadIdx.x] : 1.0f;
  }
  __syncthreads();
  for (int h = threadIdx.x * kVec; h < hidden; h += blockDim.x * kVec) {
    float acc[kVec] = {};
    for (int j = 0; j < top_k; ++j) {
      float v[kVec];
      load_f32<kVec>(v, rows + row_of[j] * hidden + h);
#pragma unroll
      for (int i = 0; i < kVec; ++i) acc[i] += weight_of[j] * v[i];
    }
    store_bf16<kVec>(out + t * hidden + h, acc);
  }
}

// Block r: d_expert_out[r] = w * d_out[t]; d_top_weight[t, j] = dot(d_out[t], expert_out[r]) with a fixed-shape
// block reduction (per-thread strided sums, warp butterflies, then the warps in order).
template <int kVec>
__global__ void combine_backward_kernel(bf16* d_expert_out, float* d_top_weight, const bf16* d_out,
                                        const bf16* expert_out, const float* top_weight, const int32_t* row_token,
                                        const int32_t* row_slot, int hidden, int top_k) {
  __shared__ float warp_dots[kRowWarps];
  const long r = blockIdx.x;
  const long t = row_token[r];
  const long pick = t * top_k + row_slot[r];
  const float w = top_weight[pick];
  float dot = 0.0f;
  for (int h = threadIdx.x * kVec; h < hidden; h += blockDim.x * kVec) {
    float g[kVec], e[kVec], d[kVec];
    load_f32<kVec>(g, d_out + t * hidden + h);
    load_f32<kVec>(e, expert_out + r * hidden + h);
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      d[i] = w * g[i];
      dot += g[i] * e[i];
    }
    store_bf16<kVec>(d_expert_out + r * hidden + h, d);
  }
  for (int offset = kWarp / 2; offset > 0; offset /= 2) dot += __shfl_xor_sync(kFullMask, dot, offset);
  if (threadIdx.x % kWarp == 0) warp_dots[threadIdx.x / kWarp] = dot;
  __syncthreads();
  if (threadIdx.x == 0) {
    float sum = 0.0f;
    for (int w_i = 0; w_i < kRowWarps; ++w_i) sum += warp_dots[w_i];
    d_top_weight[pick] = sum;
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

void check_moe_shape(int experts, int top_k) {
  MT_ASSERT(experts >= 1 && experts <= kMoeMaxExperts);
  MT_ASSERT(top_k >= 1 && top_k <= kMoeMaxTopK);
}

// One launch of combine_kernel for the forward (weights) and the gather's backward (weights null).
void launch_combine(bf16* out, const bf16* rows, const float* weights, const int32_t* token_slot_row, int tokens,
                    int hidden, int top_k, cudaStream_t stream) {
  MT_ASSERT(top_k >= 1 && top_k <= kMoeMaxTopK);
  if (tokens <= 0 || hidden <= 0) return;
  if (hidden % 8 == 0 && aligned16(out) && aligned16(rows))
    combine_kernel<8><<<tokens, kRowThreads, 0, stream>>>(out, rows, weights, token_slot_row, hidden, top_k);
  else
    combine_kernel<1><<<tokens, kRowThreads, 0, stream>>>(out, rows, weights, token_slot_row, hidden, top_k);
  CUDA_CHECK_LAUNCH("combine_kernel");
}

}  // namespace

size_t moe_routing_scratch_bytes(int /*tokens*/, int /*experts*/, int /*top_k*/) { return 0; }

void moe_build_routing(int32_t* expert_offsets, int32_t* row_token, int32_t* row_slot, int32_t* token_slot_row,
                       const int32_t* top_index, int tokens, int experts, int top_k, void* /*scratch: unused, 0 bytes*/,
                       cudaStream_t stream) {
  check_moe_shape(experts, top_k);
  MT_ASSERT(tokens >= 0 && static_cast<long>(tokens) * top_k <= INT_MAX - kScatterThreads);
  const int total = tokens * top_k;
  routing_offsets_kernel<<<1, kCountThreads, 0, stream>>>(expert_offsets, top_index, total, experts);
  CUDA_CHECK_LAUNCH("routing_offsets_kernel");
  if (total == 0) return;
  routing_scatter_kernel<<<experts, kScatterThreads, 0, stream>>>(row_token, row_slot, token_slot_row, expert_offsets,
                                                                  top_index, total, top_k);
  CUDA_CHECK_LAUNCH("routing_scatter_kernel");
}

void moe_gather(bf16* rows_out, const bf16* x, const int32_t* row_token, long rows, int hidden, cudaStream_t stream) {
  MT_ASSERT(rows >= 0 && rows <= INT_MAX);
  if (rows == 0 || hidden <= 0) return;
  if (hidden % 8 == 0 && aligned16(rows_out) && aligned16(x))
    gather_kernel<uint4><<<static_cast<unsigned>(rows), kRowThreads, 0, stream>>>(
        reinterpret_cast<uint4*>(rows_out), reinterpret_cast<const uint4*>(x), row_token, hidden / 8);
  else
    gather_kernel<bf16><<<static_cast<unsigned>(rows), kRowThreads, 0, stream>>>(rows_out, x, row_token, hidden);
  CUDA_CHECK_LAUNCH("gather_kernel");
}

void moe_combine_forward(bf16* out, const bf16* expert_out, const float* top_weight, const int32_t* token_slot_row,
                         int tokens, int hidden, int top_k, cudaStream_t stream) {
  launch_combine(out, expert_out, top_weight, token_slot_row, tokens, hidden, top_k, stream);
}

void moe_combine_backward(bf16* d_expert_out, float* d_top_weight, const bf16* d_out, const bf16* expert_out,
                          const float* top_weight, const int32_t* row_token, const int32_t* row_slot, long rows,
                          int hidden, int top_k, cudaStream_t stream) {
  MT_ASSERT(rows >= 0 && rows <= INT_MAX && top_k >= 1 && top_k <= kMoeMaxTopK);
  if (rows == 0) return;
  const unsigned blocks = static_cast<unsigned>(rows);
  if (hidden % 8 == 0 && aligned16(d_expert_out) && aligned16(d_out) && aligned16(expert_out))
    combine_backward_kernel<8><<<blocks, kRowThreads, 0, stream>>>(d_expert_out, d_top_weight, d_out, expert_out,
                                                                   top_weight, row_token, row_slot, hidden, top_k);
  else
    combine_backward_kernel<1><<<blocks, kRowThreads, 0, stream>>>(d_expert_out, d_top_weight, d_out, expert_out,
                                                                   top_weight, row_token, row_slot, hidden, top_k);
  CUDA_CHECK_LAUNCH("combine_backward_kernel");
}

void moe_scatter_add_backward(bf16* d_x, const bf16* d_rows, const int32_t* token_slot_row, int tokens, int hidden,
                              int top_k, cudaStream_t stream) {
  launch_combine(d_x, d_rows, nullptr, token_slot_row, tokens, hidden, top_k, stream);
}

}  // namespace moetune::cuda
