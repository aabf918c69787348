// Why: causal (optionally sliding-window) grouped-query attention, the reference for the fused GPU kernel. Query head h
// reads key/value head h / (heads / kv_heads). A query at position i sees key j iff j <= i and, with a window w > 0,
// i - j < w (Transformers' sliding-window mask). The CPU reference keeps the full probability matrix.
#pragma once

namespace moetune::cpu {

struct AttentionShape {
  int batch, seq_len, heads, kv_heads, head_dim;
  int window;   // 0 = full causal
  float scale;  // usually head_dim^-0.5
};

// q (B, T, heads, D), k and v (B, T, kv_heads, D); probs (B, heads, T, T) saved; out (B, T, heads, D).
void attention_forward(float* out, float* probs, const float* q, const float* k, const float* v, const AttentionShape& s);

// d_q (B, T, heads, D), d_k and d_v (B, T, kv_heads, D) are overwritten.
void attention_backward(float* d_q, float* d_k, float* d_v, const float* d_out, const float* q, const float* k,
                        const float* v, const float* probs, const AttentionShape& s);

}  // namespace moetune::cpu
