// Why: cuDNN's ragged (THD) attention, which ops/cuda/attention uses for packed rows, reads each document as one
// "sequence" of a batch: per-sequence lengths and, for every tensor, the element offset where each sequence starts.
// Documents change every batch and their offsets already live on the device, so these arrays are derived there by one
// small kernel on the attention's stream (no host synchronisation, capturable in a CUDA graph).
#pragma once

#include <cstdint>

#include "ops/cuda/cuda_check.h"

namespace moetune::cuda {

// doc_offsets (docs + 1) on the device: flattened token starts of the documents, doc_offsets[docs] = total tokens (see
// ops/cpu/document_offsets.h). For slots >= docs sequences, writes lengths (slots, int32) and the ragged offsets
// q_offsets, kv_offsets and stats_offsets (slots + 1, int64: element offsets exceed 2^31 at real sizes):
//   lengths[i] = doc_offsets[i + 1] - doc_offsets[i] for i < docs, 0 for the unused slots docs <= i < slots;
//   X_offsets[i] = start(i) * X_token, start(i) = doc_offsets[min(i, docs)]  (unused slots start at the end),
// where q_token = heads * head_dim (Q, O, dO, dQ), kv_token = kv_heads * head_dim (K, V, dK, dV) and stats_token = heads
// (the token-major (tokens, heads) softmax statistics).
void ragged_attention_offsets(int32_t* lengths, int64_t* q_offsets, int64_t* kv_offsets, int64_t* stats_offsets,
                              const int32_t* doc_offsets, int docs, int slots, int q_token, int kv_token,
                              int stats_token, cudaStream_t stream);

}  // namespace moetune::cuda
