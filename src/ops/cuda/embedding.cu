// Why: see embedding.h. Forward: one block per token copies its table row (16-byte vectors when rows are aligned).
// Backward: one thread per hidden column; per batch of kBatch tokens it first loads the old table values of every
// distinct id (independent loads, issued together), adds the batch's d_out values in token order, then stores.
#include "ops/cuda/embedding.h"

#include <cstdint>

namespace moetune::cuda {
namespace {

constexpr int kCopyThreads = 128;
constexpr int kColumnThreads = 64;
constexpr int kBatch = 16;

__global__ void embedding_forward_kernel(bf16* out, const int32_t* ids, const bf16* table, int hidden, bool vectorized) {
  const bf16* src = table + static_cast<size_t>(ids[blockIdx.x]) * hidden;
  bf16* dst = out + static_cast<size_t>(blockIdx.x) * hidden;
  if (vectorized) {  // hidden % 8 == 0 and both base pointers 16-byte aligned
    const uint4* src4 = reinterpret_cast<const uint4*>(src);
    uint4* dst4 = reinterpret_cast<uint4*>(dst);
    for (int i = threadIdx.x; i < hidden / 8; i += blockDim.x) dst4[i] = src4[i];
  } else {
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = src[i];
  }
}

__global__ void embedding_backward_kernel(float* d_table, const bf16* d_out, const int32_t* ids, int tokens, int hidden,
                                          int padding_idx) {
  const int h = blockIdx.x * blockDim.x + threadIdx.x;
  if (h >= hidden) return;
  for (int t0 = 0; t0 < tokens; t0 += kBatch) {
    int id[kBatch];
    float grad[kBatch], sum[kBatch];
    bool owner[kBatch];  // first occurrence of its id in the batch
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const int t = t0 + j;
      id[j] = t < tokens ? ids[t] : -1;
      if (id[j] == padding_idx) id[j] = -1;
      grad[j] = id[j] >= 0 ? __bfloat162float(d_out[static_cast<size_t>(t) * hidden + h]) : 0.0f;
      owner[j] = id[j] >= 0;
#pragma unroll
      for (int k = 0; k < j; ++k) owner[j] = owner[j] && id[k] != id[j];
    }
#pragma unroll
    for (int j = 0; j < kBatch; ++j) sum[j] = owner[j] ? d_table[static_cast<size_t>(id[j]) * hidden + h] : 0.0f;
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
#pragma unroll
      for (int k = j; k < kBatch; ++k)
        if (owner[j] && id[k] == id[j]) sum[j] += grad[k];  // token order, as the CPU twin adds
    }
#pragma unroll
    for (int j = 0; j < kBatch; ++j)
      if (owner[j]) d_table[static_cast<size_t>(id[j]) * hidden + h] = sum[j];
  }
}

}  // namespace

void embedding_forward(bf16* out, const int32_t* ids, const bf16* table, int tokens, int hidden, cudaStream_t stream) {
  if (tokens <= 0 || hidden <= 0) return;
  const bool vectorized = hidden % 8 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0 &&
                          reinterpret_cast<uintptr_t>(table) % 16 == 0;
  embedding_forward_kernel<<<tokens, kCopyThreads, 0, stream>>>(out, ids, table, hidden, vectorized);
  CUDA_CHECK_LAUNCH("embedding_forward_kernel");
}

void embedding_backward(float* d_table, const bf16* d_out, const int32_t* ids, int tokens, int hidden, int padding_idx,
                        cudaStream_t stream) {
  if (tokens <= 0 || hidden <= 0) return;
  const unsigned blocks = (hidden + kColumnThreads - 1) / kColumnThreads;
  embedding_backward_kernel<<<blocks, kColumnThreads, 0, stream>>>(d_table, d_out, ids, tokens, hidden, padding_idx);
  CUDA_CHECK_LAUNCH("embedding_backward_kernel");
}

}  // namespace moetune::cuda
