// Why: the model-level forward and backward of the CPU reference: embedding, the decoder layers (their attention and
// MLP halves live in cpu_attention.cpp and cpu_mlp.cpp), the final norm, the LM head and the losses.
#include "model/cpu_engine.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "ops/cpu/cross_entropy.h"
#include "ops/cpu/embedding.h"
#include "ops/cpu/linear.h"
#include "ops/cpu/rmsnorm.h"
#include "ops/cpu/router.h"

namespace moetune {

CpuEngine::CpuEngine(const ModelConfig& config, int batch, int seq_len)
    : config_(config), batch_(batch), seq_len_(seq_len), tokens_(batch * seq_len) {
  if (batch < 1 || seq_len < 1) fail("batch size and sequence length must be positive (got ", batch, " x ", seq_len, ")");
  layers_.resize(config_.num_layers);
  carve(activations_, workspace_);
  activations_.allocate_measured();
  workspace_.allocate_measured();
  carve(activations_, workspace_);
  pick_counts_.assign(config_.num_experts, 0.0);
  prob_sums_.assign(config_.num_experts, 0.0);
}

void CpuEngine::carve(Arena& act, Arena& ws) {
  act.rewind();
  ws.rewind();
  const ModelConfig& c = config_;
  const long N = tokens_, H = c.hidden_size, Q = c.q_width(), KV = c.kv_width(), E = c.num_experts, K = c.top_k;
  const long rows = N * K, I = c.moe_intermediate_size;
  const long Is = c.shared_expert_intermediate_size, Id = c.dense_intermediate_size;
  const long q_norm_rows = c.qk_norm == QkNorm::PerHead ? N * c.num_heads : N;
  const long k_norm_rows = c.qk_norm == QkNorm::PerHead ? N * c.num_kv_heads : N;
  input_ids_ = act.take<int32_t>(N);
  labels_ = act.take<int32_t>(N);
  positions_ = act.take<int32_t>(N);
  doc_start_ = act.take<int32_t>(N);
  for (int l = 0; l < c.num_layers; ++l) {
    LayerActivations& a = layers_[l];
    a = LayerActivations{};
    a.input = act.take<float>(N * H);
    a.norm1_rstd = act.take<float>(N);
    a.norm1 = act.take<float>(N * H);
    a.q_proj = act.take<float>(N * Q);
    a.k_proj = act.take<float>(N * KV);
    a.v_proj = act.take<float>(N * KV);
    a.q_rstd = act.take<float>(q_norm_rows);
    a.k_rstd = act.take<float>(k_norm_rows);
    a.q_normed = act.take<float>(N * Q);
    a.k_normed = act.take<float>(N * KV);
    a.q = act.take<float>(N * Q);
    a.k = act.take<float>(N * KV);
    a.v = act.take<float>(N * KV);
    a.probs = act.take<float>(static_cast<long>(batch_) * c.num_heads * seq_len_ * seq_len_);
    a.attn_out = act.take<float>(N * Q);
    a.mid = act.take<float>(N * H);
    a.norm2_rstd = act.take<float>(N);
    a.norm2 = act.take<float>(N * H);
    if (c.layer_is_sparse[l]) {
      a.router_logits = act.take<float>(N * E);
      a.router_probs = act.take<float>(N * E);
      a.top_index = act.take<int32_t>(N * K);
      a.top_weight = act.take<float>(N * K);
      a.routing = {act.take<int32_t>(E + 1), act.take<int32_t>(rows), act.take<int32_t>(rows)};
      a.experts = {act.take<float>(rows * H), act.take<float>(rows * 2 * I), act.take<float>(rows * I),
                   act.take<float>(rows * H)};
      if (c.has_shared_expert()) {
        a.shared_gate_up = act.take<float>(N * 2 * Is);
        a.shared_act = act.take<float>(N * Is);
        a.shared_out = act.take<float>(N * H);
        a.shared_gate_logit = act.take<float>(N);
      }
    } else {
      a.mlp_gate_up = act.take<float>(N * 2 * Id);
      a.mlp_act = act.take<float>(N * Id);
    }
  }
  final_input_ = act.take<float>(N * H);
  final_rstd_ = act.take<float>(N);
  final_norm_ = act.take<float>(N * H);
  logits_ = act.take<float>(N * c.vocab_size);
  token_probs_ = act.take<float>(N * c.vocab_size);

  const long widest_mlp = std::max(Id, Is);
  ws_.mlp_out = ws.take<float>(N * H);
  ws_.d_stream = ws.take<float>(N * H);
  ws_.d_mid = ws.take<float>(N * H);
  ws_.d_norm = ws.take<float>(N * H);
  ws_.d_tmp = ws.take<float>(N * H);
  ws_.d_attn = ws.take<float>(N * Q);
  ws_.d_q = ws.take<float>(N * Q);
  ws_.d_k = ws.take<float>(N * KV);
  ws_.d_v = ws.take<float>(N * KV);
  ws_.d_logits = ws.take<float>(N * c.vocab_size);
  ws_.d_act = ws.take<float>(N * widest_mlp);
  ws_.d_gate_up = ws.take<float>(N * 2 * widest_mlp);
  ws_.d_router_logits = ws.take<float>(N * E);
  ws_.d_top_weight = ws.take<float>(N * K);
  ws_.d_probs_extra = ws.take<float>(E);
  ws_.moe = {ws.take<float>(rows * H), ws.take<float>(rows * I), ws.take<float>(rows * 2 * I)};
}

LossParts CpuEngine::forward(const ModelWeights& w, const int32_t* input_ids, const int32_t* labels,
                             const int32_t* positions, const int32_t* doc_start) {
  const ModelConfig& c = config_;
  const int H = c.hidden_size;
  std::memcpy(input_ids_, input_ids, sizeof(int32_t) * tokens_);
  std::memcpy(labels_, labels, sizeof(int32_t) * tokens_);
  if (positions) {
    std::memcpy(positions_, positions, sizeof(int32_t) * tokens_);
  } else {
    for (int t = 0; t < tokens_; ++t) positions_[t] = t % seq_len_;
  }
  packed_ = doc_start != nullptr;
  if (packed_) std::memcpy(doc_start_, doc_start, sizeof(int32_t) * tokens_);
  std::fill(pick_counts_.begin(), pick_counts_.end(), 0.0);
  std::fill(prob_sums_.begin(), prob_sums_.end(), 0.0);
  balance_rows_ = 0.0;

  cpu::embedding_forward(layers_[0].input, input_ids_, w.embed, tokens_, H);
  for (int l = 0; l < c.num_layers; ++l) {
    LayerActivations& a = layers_[l];
    attention_forward(w.layers[l], a);
    float* next = l + 1 < c.num_layers ? layers_[l + 1].input : final_input_;
    mlp_forward(l, w.layers[l], a, ws_.mlp_out);
    for (long i = 0; i < static_cast<long>(tokens_) * H; ++i) next[i] = a.mid[i] + ws_.mlp_out[i];
  }
  cpu::rmsnorm_forward(final_norm_, final_rstd_, final_input_, w.final_norm, tokens_, H, c.rms_norm_eps);
  cpu::linear_forward(logits_, final_norm_, w.lm_head, nullptr, tokens_, H, c.vocab_size);

  LossParts parts;
  const cpu::CrossEntropyResult ce =
      cpu::cross_entropy_forward(token_probs_, logits_, labels_, batch_, seq_len_, c.vocab_size);
  parts.ce_sum = ce.loss_sum;
  parts.counted = ce.counted;
  if (balance_rows_ > 0)
    parts.aux = cpu::router_balance_loss(pick_counts_.data(), prob_sums_.data(), balance_rows_, c.num_experts);
  return parts;
}

void CpuEngine::backward(const ModelWeights& w, const ModelWeights& g, float ce_scale, float aux_scale) {
  const ModelConfig& c = config_;
  const int H = c.hidden_size;
  const long NH = static_cast<long>(tokens_) * H;
  if (balance_rows_ > 0)
    cpu::router_balance_grad(ws_.d_probs_extra, pick_counts_.data(), balance_rows_, c.num_experts, aux_scale);

  cpu::cross_entropy_backward(ws_.d_logits, token_probs_, labels_, batch_, seq_len_, c.vocab_size, ce_scale);
  cpu::linear_backward(ws_.d_norm, g.lm_head, nullptr, ws_.d_logits, final_norm_, w.lm_head, tokens_, H, c.vocab_size);
  cpu::rmsnorm_backward(ws_.d_stream, g.final_norm, ws_.d_norm, final_input_, w.final_norm, final_rstd_, tokens_, H);

  for (int l = c.num_layers - 1; l >= 0; --l) {
    LayerActivations& a = layers_[l];
    // d_stream holds d(layer output). The MLP half: output = mid + mlp(norm2(mid)).
    mlp_backward(l, w.layers[l], g.layers[l], a, aux_scale);  // leaves d norm2 in ws_.d_norm
    cpu::rmsnorm_backward(ws_.d_tmp, g.layers[l].post_norm, ws_.d_norm, a.mid, w.layers[l].post_norm, a.norm2_rstd, tokens_, H);
    for (long i = 0; i < NH; ++i) ws_.d_mid[i] = ws_.d_stream[i] + ws_.d_tmp[i];
    // The attention half: mid = input + attention(norm1(input)).
    attention_backward(w.layers[l], g.layers[l], a);  // leaves d norm1 in ws_.d_norm
    cpu::rmsnorm_backward(ws_.d_tmp, g.layers[l].input_norm, ws_.d_norm, a.input, w.layers[l].input_norm, a.norm1_rstd,
                          tokens_, H);
    for (long i = 0; i < NH; ++i) ws_.d_stream[i] = ws_.d_mid[i] + ws_.d_tmp[i];
  }
  cpu::embedding_backward(g.embed, ws_.d_stream, input_ids_, tokens_, H, c.padding_idx);
}

}  // namespace moetune
