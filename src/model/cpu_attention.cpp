// Why: the attention half of a decoder layer on the CPU, forward and backward:
//   norm1 = RMSNorm(input); q,k,v = projections (+bias); q,k = q/k RMSNorm (per head or full width);
//   q,k,v = clamp(±clip_qkv) (OLMoE); q,k = RoPE (at each token's position: t % seq_len, or restarting per document
//   in a packed row); attn = softmax(q k^T * scale, causal[/window][/within the document]) v;
//   mid = input + o_proj(attn).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "model/cpu_engine.h"
#include "ops/cpu/attention.h"
#include "ops/cpu/linear.h"
#include "ops/cpu/rmsnorm.h"
#include "ops/cpu/rope.h"

namespace moetune {

namespace {

void clamp_copy(float* out, const float* in, long count, float limit) {
  if (limit <= 0) {
    std::memcpy(out, in, sizeof(float) * count);
    return;
  }
  for (long i = 0; i < count; ++i) out[i] = std::clamp(in[i], -limit, limit);
}

// Gradient of clamp: passes where -limit <= x <= limit (PyTorch's rule at the bounds), zero elsewhere.
void clamp_backward(float* d, const float* in, long count, float limit) {
  if (limit <= 0) return;
  for (long i = 0; i < count; ++i)
    if (in[i] < -limit || in[i] > limit) d[i] = 0.0f;
}

}  // namespace

void CpuEngine::attention_forward(const LayerWeights& w, LayerActivations& a) {
  const ModelConfig& c = config_;
  const int N = tokens_, H = c.hidden_size, Q = c.q_width(), KV = c.kv_width(), D = c.head_dim;
  cpu::rmsnorm_forward(a.norm1, a.norm1_rstd, a.input, w.input_norm, N, H, c.rms_norm_eps);
  cpu::linear_forward(a.q_proj, a.norm1, w.q_proj, w.q_bias, N, H, Q);
  cpu::linear_forward(a.k_proj, a.norm1, w.k_proj, w.k_bias, N, H, KV);
  cpu::linear_forward(a.v_proj, a.norm1, w.v_proj, w.v_bias, N, H, KV);
  switch (c.qk_norm) {
    case QkNorm::PerHead:
      cpu::rmsnorm_forward(a.q_normed, a.q_rstd, a.q_proj, w.q_norm, N * c.num_heads, D, c.rms_norm_eps);
      cpu::rmsnorm_forward(a.k_normed, a.k_rstd, a.k_proj, w.k_norm, N * c.num_kv_heads, D, c.rms_norm_eps);
      break;
    case QkNorm::FullWidth:
      cpu::rmsnorm_forward(a.q_normed, a.q_rstd, a.q_proj, w.q_norm, N, Q, c.rms_norm_eps);
      cpu::rmsnorm_forward(a.k_normed, a.k_rstd, a.k_proj, w.k_norm, N, KV, c.rms_norm_eps);
      break;
    case QkNorm::None:
      std::memcpy(a.q_normed, a.q_proj, sizeof(float) * N * Q);
      std::memcpy(a.k_normed, a.k_proj, sizeof(float) * N * KV);
      break;
  }
  clamp_copy(a.q, a.q_normed, static_cast<long>(N) * Q, c.clip_qkv);
  clamp_copy(a.k, a.k_normed, static_cast<long>(N) * KV, c.clip_qkv);
  clamp_copy(a.v, a.v_proj, static_cast<long>(N) * KV, c.clip_qkv);
  cpu::rope_apply(a.q, positions_, N, c.num_heads, D, c.rope_theta, false);
  cpu::rope_apply(a.k, positions_, N, c.num_kv_heads, D, c.rope_theta, false);

  const int layer = static_cast<int>(&a - layers_.data());
  const cpu::AttentionShape shape{batch_, seq_len_, c.num_heads, c.num_kv_heads, D, c.sliding_window[layer],
                                  static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)))};
  cpu::attention_forward(a.attn_out, a.probs, a.q, a.k, a.v, shape, packed_ ? doc_start_ : nullptr);
  std::memcpy(a.mid, a.input, sizeof(float) * N * H);
  cpu::linear_forward(a.mid, a.attn_out, w.o_proj, w.o_bias, N, Q, H, 1.0f);
}

void CpuEngine::attention_backward(const LayerWeights& w, const LayerWeights& g, LayerActivations& a) {
  const ModelConfig& c = config_;
  const int N = tokens_, H = c.hidden_size, Q = c.q_width(), KV = c.kv_width(), D = c.head_dim;
  cpu::linear_backward(ws_.d_attn, g.o_proj, g.o_bias, ws_.d_mid, a.attn_out, w.o_proj, N, Q, H);

  const int layer = static_cast<int>(&a - layers_.data());
  const cpu::AttentionShape shape{batch_, seq_len_, c.num_heads, c.num_kv_heads, D, c.sliding_window[layer],
                                  static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)))};
  cpu::attention_backward(ws_.d_q, ws_.d_k, ws_.d_v, ws_.d_attn, a.q, a.k, a.v, a.probs, shape,
                          packed_ ? doc_start_ : nullptr);
  cpu::rope_apply(ws_.d_q, positions_, N, c.num_heads, D, c.rope_theta, true);
  cpu::rope_apply(ws_.d_k, positions_, N, c.num_kv_heads, D, c.rope_theta, true);
  clamp_backward(ws_.d_q, a.q_normed, static_cast<long>(N) * Q, c.clip_qkv);
  clamp_backward(ws_.d_k, a.k_normed, static_cast<long>(N) * KV, c.clip_qkv);
  clamp_backward(ws_.d_v, a.v_proj, static_cast<long>(N) * KV, c.clip_qkv);
  switch (c.qk_norm) {
    case QkNorm::PerHead:
      cpu::rmsnorm_backward(ws_.d_q, g.q_norm, ws_.d_q, a.q_proj, w.q_norm, a.q_rstd, N * c.num_heads, D);
      cpu::rmsnorm_backward(ws_.d_k, g.k_norm, ws_.d_k, a.k_proj, w.k_norm, a.k_rstd, N * c.num_kv_heads, D);
      break;
    case QkNorm::FullWidth:
      cpu::rmsnorm_backward(ws_.d_q, g.q_norm, ws_.d_q, a.q_proj, w.q_norm, a.q_rstd, N, Q);
      cpu::rmsnorm_backward(ws_.d_k, g.k_norm, ws_.d_k, a.k_proj, w.k_norm, a.k_rstd, N, KV);
      break;
    case QkNorm::None:
      break;
  }
  cpu::linear_backward(ws_.d_norm, g.q_proj, g.q_bias, ws_.d_q, a.norm1, w.q_proj, N, H, Q);
  cpu::linear_backward(ws_.d_norm, g.k_proj, g.k_bias, ws_.d_k, a.norm1, w.k_proj, N, H, KV, true);
  cpu::linear_backward(ws_.d_norm, g.v_proj, g.v_bias, ws_.d_v, a.norm1, w.v_proj, N, H, KV, true);
}

}  // namespace moetune
