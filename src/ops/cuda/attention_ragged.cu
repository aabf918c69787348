// Why: see attention_ragged.h. One thread per sequence slot (plus the closing offset); the arrays are tiny.
#include "ops/cuda/attention_ragged.h"

namespace moetune::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void ragged_offsets_kernel(int32_t* lengths, int64_t* q_offsets, int64_t* kv_offsets, int64_t* stats_offsets,
                                      const int32_t* doc_offsets, int docs, int slots, int q_token, int kv_token,
                                      int stats_token) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i > slots) return;
  const int32_t first = doc_offsets[i < docs ? i : docs];
  if (i < slots) lengths[i] = i < docs ? doc_offsets[i + 1] - first : 0;
  const int64_t start = first;
  q_offsets[i] = start * q_token;
  kv_offsets[i] = start * kv_token;
  stats_offsets[i] = start * stats_token;
}

}  // namespace

void ragged_attention_offsets(int32_t* lengths, int64_t* q_offsets, int64_t* kv_offsets, int64_t* stats_offsets,
                              const int32_t* doc_offsets, int docs, int slots, int q_token, int kv_token,
                              int stats_token, cudaStream_t stream) {
  MT_ASSERT(docs >= 1 && docs <= slots);
  const int blocks = (slots + 1 + kThreads - 1) / kThreads;
  ragged_offsets_kernel<<<blocks, kThreads, 0, stream>>>(lengths, q_offsets, kv_offsets, stats_offsets, doc_offsets,
                                                         docs, slots, q_token, kv_token, stats_token);
  CUDA_CHECK_LAUNCH("ragged_offsets_kernel");
}

}  // namespace moetune::cuda
