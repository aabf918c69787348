// Why: causal (optionally sliding-window) grouped-query attention, the reference for the fused GPU kernel. Query head h
// reads key/value head h / (heads / kv_heads). A query at position i sees key j iff j <= i and, with a window w > 0,
// i - j < w (Transformers' sliding-window mask). Packed rows (several documents in one sequence) add one more rule:
// j >= doc_start[i], the position where query i's document begins in its row, so no token attends across documents
// (the block-diagonal causal mask of Transformers' packing collators / flash-attention varlen). Without doc_start
// (nullptr) the rule is j >= 0 and the computation is exactly the unpacked one. The CPU reference keeps the full
// probability matrix.
#pragma once

#include <cstdint>

namespace moetune::cpu {

struct AttentionShape {
  int batch, seq_len, heads, kv_heads, head_dim;
  int window;   // 0 = full causal
  float scale;  // usually head_dim^-0.5
};

// q (B, T, heads, D), k and v (B, T, kv_heads, D); probs (B, heads, T, T) saved (0 where masked); out (B, T, heads, D).
// doc_start (B, T) or nullptr: doc_start[b * T + i] is the first key position query i may see (0 <= it <= i).
void attention_forward(float* out, float* probs, const float* q, const float* k, const float* v, const AttentionShape& s,
                       const int32_t* doc_start = nullptr);

// d_q (B, T, heads, D), d_k and d_v (B, T, kv_heads, D) are overwritten. doc_start as in the forward.
void attention_backward(float* d_q, float* d_k, float* d_v, const float* d_out, const float* q, const float* k,
                        const float* v, const float* probs, const AttentionShape& s, const int32_t* doc_start = nullptr);

}  // namespace moetune::cpu
