// Why: token embedding lookup and its gradient (a scatter-add into the table rows of the ids seen).
#pragma once

#include <cstdint>

namespace moetune::cpu {

// out (tokens, H) = table (V, H)[ids]; ids (tokens) must be in [0, V) (checked by the data loader).
void embedding_forward(float* out, const int32_t* ids, const float* table, int tokens, int hidden);
// d_table (V, H) += scatter of d_out (tokens, H) by ids; the row padding_idx (if >= 0) receives nothing, as in
// PyTorch's nn.Embedding(padding_idx=...).
void embedding_backward(float* d_table, const float* d_out, const int32_t* ids, int tokens, int hidden, int padding_idx);

}  // namespace moetune::cpu
