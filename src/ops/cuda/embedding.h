// Why: the GPU twin of ops/cpu/embedding.h: the token-embedding lookup and its gradient, a scatter-add of d_out rows
// into the table rows of the ids seen. The gradient is made deterministic without atomics or a sort: each thread owns
// one hidden column and walks the tokens in order, so every table element receives its additions in token order, the
// same fp32 additions in the same order as the CPU twin (bitwise equal to it). Parallelism is `hidden` threads, each
// walking all tokens; to hide memory latency the walk takes 16 tokens at a time (duplicate ids inside the batch are
// summed by their first occurrence, still in token order). Fine for the ~16k tokens of a step; a sort-based segmented
// reduction would be the next step if this ever shows in a profile.
#pragma once

#include <cstdint>

#include "ops/cuda/cuda_check.h"

namespace moetune::cuda {

// out (tokens, H) = table (V, H)[ids]; ids (tokens) on the device, each in [0, V) (checked by the data loader).
void embedding_forward(bf16* out, const int32_t* ids, const bf16* table, int tokens, int hidden, cudaStream_t stream);

// d_table (V, H) fp32 += scatter of d_out (tokens, H) by ids; the row padding_idx (if >= 0) receives nothing, as in
// PyTorch's nn.Embedding(padding_idx=...). Deterministic (see above); needs no scratch.
void embedding_backward(float* d_table, const bf16* d_out, const int32_t* ids, int tokens, int hidden, int padding_idx,
                        cudaStream_t stream);

}  // namespace moetune::cuda
