// Why: see cross_entropy.h. Each thread keeps a running (max, sum of exp(x - max)) over its strided logits, the pairs
// are merged across the block, and a second pass over the row (mostly L2-resident: 300 KB at V = 152k) writes the
// gradient in place. The pass is memory-bound, so when V is a multiple of 8 each thread moves 8 logits (16 bytes) per
// access and folds them into its pair at once. The target logit is read before the first barrier, so no thread can
// have overwritten it yet.
#include "ops/cuda/cross_entropy.h"

#include <cmath>
#include <cstdint>

namespace moetune::cuda {
namespace {

constexpr int kThreads = 1024;
constexpr int kPack = 8;  // bf16 logits per 16-byte access

struct MaxSum {
  float max, sum;  // sum of exp(x - max); an empty set is (-inf, 0); a NaN logit makes sum NaN
};

__device__ __forceinline__ MaxSum merge(MaxSum a, MaxSum b) {
  if (a.max == -INFINITY && a.sum == 0.0f) return b;
  if (b.max == -INFINITY && b.sum == 0.0f) return a;
  const float m = fmaxf(a.max, b.max);
  return {m, a.sum * expf(a.max - m) + b.sum * expf(b.max - m)};
}

__device__ MaxSum block_merge(MaxSum v) {
  __shared__ MaxSum partial[32];
  for (int offset = 16; offset > 0; offset >>= 1)
    v = merge(v, {__shfl_xor_sync(0xffffffffu, v.max, offset), __shfl_xor_sync(0xffffffffu, v.sum, offset)});
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < static_cast<int>(blockDim.x >> 5) ? partial[lane] : MaxSum{-INFINITY, 0.0f};
  for (int offset = 16; offset > 0; offset >>= 1)
    v = merge(v, {__shfl_xor_sync(0xffffffffu, v.max, offset), __shfl_xor_sync(0xffffffffu, v.sum, offset)});
  return v;
}

// packed: V is a multiple of 8 and the logits 16-byte aligned, so every row is.
__global__ void cross_entropy_kernel(bf16* logits_inout, float* row_loss, const int32_t* targets, int vocab,
                                     float grad_scale, bool packed) {
  bf16* row = logits_inout + static_cast<size_t>(blockIdx.x) * vocab;
  const int32_t target = targets[blockIdx.x];
  if (target < 0 || target >= vocab) {  // ignored row (uniform across the block: no barrier is skipped by a few)
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) row[i] = __float2bfloat16(0.0f);
    if (threadIdx.x == 0) row_loss[blockIdx.x] = 0.0f;
    return;
  }
  const float target_logit = __bfloat162float(row[target]);  // before any write to the row
  MaxSum stats{-INFINITY, 0.0f};
  if (packed) {
    const uint4* packs = reinterpret_cast<const uint4*>(row);
    for (int p = threadIdx.x; p < vocab / kPack; p += blockDim.x) {
      const uint4 pack = packs[p];
      const bf16* values = reinterpret_cast<const bf16*>(&pack);
      float x[kPack], pack_max = -INFINITY, pack_sum = 0.0f;
      for (int k = 0; k < kPack; ++k) {
        x[k] = __bfloat162float(values[k]);
        pack_max = fmaxf(pack_max, x[k]);  // skips NaN, which the sum below then carries
      }
      // Every logit -inf: the empty set, unless one is NaN (exp(NaN) keeps the sum NaN).
      const bool all_minus_inf = pack_max == -INFINITY;
      for (int k = 0; k < kPack; ++k) pack_sum += all_minus_inf && !isnan(x[k]) ? 0.0f : expf(x[k] - pack_max);
      stats = merge(stats, {pack_max, pack_sum});
    }
  } else {
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
      const float x = __bfloat162float(row[i]);
      if (x > stats.max) {
        stats.sum = stats.sum * expf(stats.max - x) + 1.0f;
        stats.max = x;
      } else if (x != -INFINITY) {
        stats.sum += expf(x - stats.max);
      }
    }
  }
  stats = block_merge(stats);
  if (threadIdx.x == 0) row_loss[blockIdx.x] = logf(stats.sum) + stats.max - target_logit;
  const float inv_sum = 1.0f / stats.sum;
  if (packed) {
    uint4* packs = reinterpret_cast<uint4*>(row);
    for (int p = threadIdx.x; p < vocab / kPack; p += blockDim.x) {
      uint4 pack = packs[p];
      bf16* values = reinterpret_cast<bf16*>(&pack);
      for (int k = 0; k < kPack; ++k) {
        const float prob = expf(__bfloat162float(values[k]) - stats.max) * inv_sum;
        values[k] = __float2bfloat16(grad_scale * prob - (p * kPack + k == target ? grad_scale : 0.0f));
      }
      packs[p] = pack;
    }
  } else {
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
      const float prob = expf(__bfloat162float(row[i]) - stats.max) * inv_sum;
      row[i] = __float2bfloat16(grad_scale * prob - (i == target ? grad_scale : 0.0f));
    }
  }
}

__global__ void sum_floats_kernel(float* result, const float* values, int count) {
  __shared__ float partial[32];
  float sum = 0.0f;
  for (int i = threadIdx.x; i < count; i += blockDim.x) sum += values[i];
  for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) partial[warp] = sum;
  __syncthreads();
  if (warp == 0) {
    sum = lane < static_cast<int>(blockDim.x >> 5) ? partial[lane] : 0.0f;
    for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    if (lane == 0) *result = sum;
  }
}

}  // namespace

void cross_entropy_forward_backward(bf16* logits_inout, float* row_loss, const int32_t* targets, int rows, int vocab,
                                    float grad_scale, cudaStream_t stream) {
  if (rows <= 0 || vocab <= 0) return;
  const bool packed = vocab % kPack == 0 && reinterpret_cast<uintptr_t>(logits_inout) % sizeof(uint4) == 0;
  cross_entropy_kernel<<<rows, kThreads, 0, stream>>>(logits_inout, row_loss, targets, vocab, grad_scale, packed);
  CUDA_CHECK_LAUNCH("cross_entropy_kernel");
}

void sum_floats(const float* values, int count, float* result_device, cudaStream_t stream) {
  sum_floats_kernel<<<1, kThreads, 0, stream>>>(result_device, values, count < 0 ? 0 : count);
  CUDA_CHECK_LAUNCH("sum_floats_kernel");
}

}  // namespace moetune::cuda
