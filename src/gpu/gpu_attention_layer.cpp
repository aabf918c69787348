// Why: the attention half of a decoder layer on the GPU, forward and backward — the twin of model/cpu_attention.cpp:
//   norm1 = RMSNorm(input); q,k,v = projections (+ bias); q,k = q/k RMSNorm (per head or full width);
//   q,k,v = clamp(±clip_qkv) (OLMoE); q,k = RoPE; attn = flash attention; mid = input + o_proj(attn) (+ bias).
// Biases and the clamp cost kernels only for the configs that have them.
#include <cmath>

#include "gpu/elementwise.h"
#include "gpu/gpu_engine_internal.h"
#include "ops/cuda/bias.h"
#include "ops/cuda/clamp.h"
#include "ops/cuda/rmsnorm.h"
#include "ops/cuda/rope.h"

namespace moetune::cuda {

cpu::AttentionShape attention_shape(const ModelConfig& c, int batch, int seq_len, int layer) {
  return {batch, seq_len, c.num_heads, c.num_kv_heads, c.head_dim, c.sliding_window[layer],
          static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.head_dim)))};
}

void GpuEngine::attention_forward(int l, const GpuWeights& weights) {
  const ModelConfig& c = config_;
  const LayerParams<bf16>& w = weights.layers[l];
  Layer& a = layers_[l];
  const int N = tokens_, H = c.hidden_size, Q = c.q_width(), KV = c.kv_width(), D = c.head_dim;
  const bool clip = c.clip_qkv > 0;
  bf16* v_proj = clip ? a.v_unclipped : a.v;  // (N, KV) the projection (+ bias)
  mark(Phase::Other);
  rmsnorm_forward(a.norm1, a.rstd1, a.input, w.input_norm, N, H, c.rms_norm_eps, stream_);
  mark(Phase::OtherGemm);
  gemm_.linear_forward(a.q_proj, a.norm1, w.q_proj, N, H, Q);
  gemm_.linear_forward(a.k_proj, a.norm1, w.k_proj, N, H, KV);
  gemm_.linear_forward(v_proj, a.norm1, w.v_proj, N, H, KV);
  mark(Phase::Other);
  if (c.attention_bias) {
    bias_add(a.q_proj, w.q_bias, N, Q, stream_);
    bias_add(a.k_proj, w.k_bias, N, KV, stream_);
    bias_add(v_proj, w.v_bias, N, KV, stream_);
  }
  bf16* q_normed = clip ? a.q_unclipped : a.q;  // (N, Q) after the q/k norm, before the clamp
  bf16* k_normed = clip ? a.k_unclipped : a.k;  // (N, KV)
  switch (c.qk_norm) {
    case QkNorm::PerHead:
      rmsnorm_forward(q_normed, a.q_rstd, a.q_proj, w.q_norm, N * c.num_heads, D, c.rms_norm_eps, stream_);
      rmsnorm_forward(k_normed, a.k_rstd, a.k_proj, w.k_norm, N * c.num_kv_heads, D, c.rms_norm_eps, stream_);
      break;
    case QkNorm::FullWidth:
      rmsnorm_forward(q_normed, a.q_rstd, a.q_proj, w.q_norm, N, Q, c.rms_norm_eps, stream_);
      rmsnorm_forward(k_normed, a.k_rstd, a.k_proj, w.k_norm, N, KV, c.rms_norm_eps, stream_);
      break;
    case QkNorm::None:  // with clip_qkv, q_unclipped and k_unclipped are q_proj and k_proj themselves
      if (!clip) {
        CUDA_CHECK(cudaMemcpyAsync(a.q, a.q_proj, sizeof(bf16) * N * Q, cudaMemcpyDeviceToDevice, stream_));
        CUDA_CHECK(cudaMemcpyAsync(a.k, a.k_proj, sizeof(bf16) * N * KV, cudaMemcpyDeviceToDevice, stream_));
      }
      break;
  }
  if (clip) {
    clamp_forward(a.q, a.q_unclipped, static_cast<size_t>(N) * Q, c.clip_qkv, stream_);
    clamp_forward(a.k, a.k_unclipped, static_cast<size_t>(N) * KV, c.clip_qkv, stream_);
    clamp_forward(a.v, a.v_unclipped, static_cast<size_t>(N) * KV, c.clip_qkv, stream_);
  }
  rope_apply(a.q, b_->positions, N, c.num_heads, D, c.rope_theta, false, stream_);
  rope_apply(a.k, b_->positions, N, c.num_kv_heads, D, c.rope_theta, false, stream_);
  mark(Phase::Attention);
  if (documents_ > 0)
    attention_.forward_packed(a.attn_out, a.stats, a.q, a.k, a.v, attention_shape(c, batch_, seq_len_, l),
                              {doc_offsets_, documents_});
  else
    attention_.forward(a.attn_out, a.stats, a.q, a.k, a.v, attention_shape(c, batch_, seq_len_, l));
  mark(Phase::OtherGemm);
  CUDA_CHECK(cudaMemcpyAsync(a.mid, a.input, sizeof(bf16) * N * H, cudaMemcpyDeviceToDevice, stream_));
  gemm_.linear_forward(a.mid, a.attn_out, w.o_proj, N, Q, H, 1.0f);
  if (c.o_proj_bias) {
    mark(Phase::Other);
    bias_add(a.mid, w.o_bias, N, H, stream_);
  }
}

// Input: b.d_mid = d(mid). Output: b.d_stream = d(input).
void GpuEngine::attention_backward(int l, const GpuWeights& weights, const GpuWeights& grads) {
  const ModelConfig& c = config_;
  const LayerParams<bf16>& w = weights.layers[l];
  const LayerParams<bf16>& g = grads.layers[l];
  Layer& a = layers_[l];
  Buffers& b = *b_;
  const int N = tokens_, H = c.hidden_size, Q = c.q_width(), KV = c.kv_width(), D = c.head_dim;
  if (c.o_proj_bias) {
    mark(Phase::Other);
    bias_grad(g.o_bias, b.d_mid, N, H, b.bias_scratch, stream_);
  }
  mark(Phase::OtherGemm);
  gemm_.linear_backward(b.d_attn, g.o_proj, b.d_mid, a.attn_out, w.o_proj, N, Q, H);
  mark(Phase::Attention);
  if (documents_ > 0)
    attention_.backward_packed(b.d_q, b.d_k, b.d_v, b.d_attn, a.q, a.k, a.v, a.attn_out, a.stats,
                               attention_shape(c, batch_, seq_len_, l), {doc_offsets_, documents_});
  else
    attention_.backward(b.d_q, b.d_k, b.d_v, b.d_attn, a.q, a.k, a.v, a.attn_out, a.stats,
                        attention_shape(c, batch_, seq_len_, l));
  mark(Phase::Other);
  rope_apply(b.d_q, b.positions, N, c.num_heads, D, c.rope_theta, true, stream_);
  rope_apply(b.d_k, b.positions, N, c.num_kv_heads, D, c.rope_theta, true, stream_);
  if (c.clip_qkv > 0) {
    clamp_backward(b.d_q, a.q_unclipped, static_cast<size_t>(N) * Q, c.clip_qkv, stream_);
    clamp_backward(b.d_k, a.k_unclipped, static_cast<size_t>(N) * KV, c.clip_qkv, stream_);
    clamp_backward(b.d_v, a.v_unclipped, static_cast<size_t>(N) * KV, c.clip_qkv, stream_);
  }
  if (c.qk_norm != QkNorm::None) {
    const bool per_head = c.qk_norm == QkNorm::PerHead;
    CUDA_CHECK(cudaMemsetAsync(b.norm_grad, 0, sizeof(float) * (per_head ? D : Q), stream_));
    rmsnorm_backward(b.d_q, b.norm_grad, b.d_q, a.q_proj, w.q_norm, a.q_rstd, per_head ? N * c.num_heads : N,
                     per_head ? D : Q, b.norm_scratch, stream_);
    add_norm_grad(g.q_norm, per_head ? D : Q);
    CUDA_CHECK(cudaMemsetAsync(b.norm_grad, 0, sizeof(float) * (per_head ? D : KV), stream_));
    rmsnorm_backward(b.d_k, b.norm_grad, b.d_k, a.k_proj, w.k_norm, a.k_rstd, per_head ? N * c.num_kv_heads : N,
                     per_head ? D : KV, b.norm_scratch, stream_);
    add_norm_grad(g.k_norm, per_head ? D : KV);
  }
  if (c.attention_bias) {  // d_q, d_k, d_v now hold the gradients of the projections (+ bias)
    bias_grad(g.q_bias, b.d_q, N, Q, b.bias_scratch, stream_);
    bias_grad(g.k_bias, b.d_k, N, KV, b.bias_scratch, stream_);
    bias_grad(g.v_bias, b.d_v, N, KV, b.bias_scratch, stream_);
  }
  mark(Phase::OtherGemm);
  gemm_.linear_backward(b.d_norm, g.q_proj, b.d_q, a.norm1, w.q_proj, N, H, Q);
  gemm_.linear_backward(b.d_norm, g.k_proj, b.d_k, a.norm1, w.k_proj, N, H, KV, 1.0f);
  gemm_.linear_backward(b.d_norm, g.v_proj, b.d_v, a.norm1, w.v_proj, N, H, KV, 1.0f);
  mark(Phase::Other);
  CUDA_CHECK(cudaMemsetAsync(b.norm_grad, 0, sizeof(float) * H, stream_));
  rmsnorm_backward(b.d_tmp, b.norm_grad, b.d_norm, a.input, w.input_norm, a.rstd1, N, H, b.norm_scratch, stream_);
  add_norm_grad(g.input_norm, H);
  add_bf16(b.d_stream, b.d_mid, b.d_tmp, static_cast<size_t>(N) * H, stream_);
}

}  // namespace moetune::cuda
