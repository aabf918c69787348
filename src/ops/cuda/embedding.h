// Why: the GPU twin of ops/cpu/embedding.h: the token-embedding lookup and its gradient, a scatter-add of d_out rows
// into the table rows of the ids seen. The gradient is deterministic without atomics: token positions are sorted by id
// with a stable radix sort, then one block per run of equal ids sums the run's d_out rows in fp32 in token order (the
// CPU twin's order) and adds the sum once into the bf16 table row. Only the rows of ids seen are touched, so no
// vocabulary-sized fp32 buffer is needed.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ops/cuda/cuda_check.h"

namespace moetune::cuda {

// out (tokens, H) = table (V, H)[ids]; ids (tokens) on the device, each in [0, V) (checked by the data loader).
void embedding_forward(bf16* out, const int32_t* ids, const bf16* table, int tokens, int hidden, cudaStream_t stream);

// Bytes of scratch embedding_backward needs for `tokens` ids.
size_t embedding_backward_scratch_bytes(int tokens);

// d_table (V, H) bf16: row id += (fp32 sum, in token order, of the d_out (tokens, H) rows with that id), rounded once;
// the row padding_idx (if >= 0) receives nothing, as in PyTorch's nn.Embedding(padding_idx=...). ids (tokens) on the
// device, each in [0, V). scratch: embedding_backward_scratch_bytes(tokens) bytes, 256-byte aligned.
void embedding_backward(bf16* d_table, const bf16* d_out, const int32_t* ids, int tokens, int hidden, int padding_idx,
                        void* scratch, cudaStream_t stream);

}  // namespace moetune::cuda
