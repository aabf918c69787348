// Why: the MLP half of a decoder layer on the CPU, forward and backward. Sparse layers: router (softmax, top-k, optional
// renormalisation), routed SwiGLU experts combined with the routing weights, and (Qwen2-MoE) a shared SwiGLU expert
// scaled by sigmoid(shared_expert_gate(x)). Dense layers: one SwiGLU MLP. The load-balancing statistics of every sparse
// layer are gathered here for the auxiliary loss.
#include <cmath>

#include "model/cpu_engine.h"
#include "ops/cpu/linear.h"
#include "ops/cpu/rmsnorm.h"
#include "ops/cpu/router.h"
#include "ops/cpu/swiglu.h"

namespace moetune {

namespace {

// out (N, H) = down(swiglu(gate_up(x))); saves gate_up (N, 2I) and act (N, I). beta = 1 adds to out.
void swiglu_mlp_forward(float* out, float* gate_up, float* act, const float* x, const float* w_gate_up, const float* w_down,
                        int tokens, int hidden, int intermediate, float beta) {
  cpu::linear_forward(gate_up, x, w_gate_up, nullptr, tokens, hidden, 2 * intermediate);
  cpu::swiglu_forward(act, gate_up, tokens, intermediate);
  cpu::linear_forward(out, act, w_down, nullptr, tokens, intermediate, hidden, beta);
}

// d_x (N, H) accumulated (or overwritten when !accumulate), weight gradients accumulated.
void swiglu_mlp_backward(float* d_x, float* d_w_gate_up, float* d_w_down, float* d_act, float* d_gate_up, const float* d_out,
                         const float* gate_up, const float* act, const float* x, const float* w_gate_up,
                         const float* w_down, int tokens, int hidden, int intermediate, bool accumulate) {
  cpu::linear_backward(d_act, d_w_down, nullptr, d_out, act, w_down, tokens, intermediate, hidden);
  cpu::swiglu_backward(d_gate_up, d_act, gate_up, tokens, intermediate);
  cpu::linear_backward(d_x, d_w_gate_up, nullptr, d_gate_up, x, w_gate_up, tokens, hidden, 2 * intermediate, accumulate);
}

float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

}  // namespace

void CpuEngine::mlp_forward(int layer, const LayerWeights& w, LayerActivations& a, float* out) {
  const ModelConfig& c = config_;
  const int N = tokens_, H = c.hidden_size;
  cpu::rmsnorm_forward(a.norm2, a.norm2_rstd, a.mid, w.post_norm, N, H, c.rms_norm_eps);
  if (!c.layer_is_sparse[layer]) {
    swiglu_mlp_forward(out, a.mlp_gate_up, a.mlp_act, a.norm2, w.mlp_gate_up, w.mlp_down, N, H, c.dense_intermediate_size,
                       0.0f);
    return;
  }
  const int E = c.num_experts, K = c.top_k;
  cpu::linear_forward(a.router_logits, a.norm2, w.router, nullptr, N, H, E);
  cpu::router_forward(a.router_probs, a.top_index, a.top_weight, a.router_logits, N, E, K, c.norm_topk_prob);
  cpu::router_balance_accumulate(pick_counts_.data(), prob_sums_.data(), a.router_probs, a.top_index, N, E, K);
  balance_rows_ += N;

  const cpu::MoeShape shape{N, H, E, c.moe_intermediate_size, K};
  cpu::moe_build_routing(a.routing, a.top_index, shape);
  cpu::moe_experts_forward(out, a.experts, a.norm2, a.top_weight, a.routing, w.experts_gate_up, w.experts_down, shape);

  if (c.has_shared_expert()) {
    const int Is = c.shared_expert_intermediate_size;
    swiglu_mlp_forward(a.shared_out, a.shared_gate_up, a.shared_act, a.norm2, w.shared_gate_up, w.shared_down, N, H, Is,
                       0.0f);
    cpu::linear_forward(a.shared_gate_logit, a.norm2, w.shared_gate, nullptr, N, H, 1);
    for (long t = 0; t < N; ++t) {
      const float gate = sigmoid(a.shared_gate_logit[t]);
      for (int h = 0; h < H; ++h) out[t * H + h] += gate * a.shared_out[t * H + h];
    }
  }
}

// Input: ws_.d_stream = d(mlp output). Output: ws_.d_norm = d(norm2).
void CpuEngine::mlp_backward(int layer, const LayerWeights& w, const LayerWeights& g, LayerActivations& a, float aux_scale) {
  const ModelConfig& c = config_;
  const int N = tokens_, H = c.hidden_size;
  const float* d_out = ws_.d_stream;
  if (!c.layer_is_sparse[layer]) {
    swiglu_mlp_backward(ws_.d_norm, g.mlp_gate_up, g.mlp_down, ws_.d_act, ws_.d_gate_up, d_out, a.mlp_gate_up, a.mlp_act,
                        a.norm2, w.mlp_gate_up, w.mlp_down, N, H, c.dense_intermediate_size, false);
    return;
  }
  const int E = c.num_experts, K = c.top_k;
  const cpu::MoeShape shape{N, H, E, c.moe_intermediate_size, K};
  for (long i = 0; i < static_cast<long>(N) * H; ++i) ws_.d_norm[i] = 0.0f;
  cpu::moe_experts_backward(ws_.d_norm, ws_.d_top_weight, g.experts_gate_up, g.experts_down, ws_.moe, d_out, a.experts,
                            a.top_weight, a.routing, w.experts_gate_up, w.experts_down, shape);
  cpu::router_backward(ws_.d_router_logits, ws_.d_top_weight, aux_scale != 0.0f ? ws_.d_probs_extra : nullptr,
                       a.router_probs, a.top_index, a.top_weight, N, E, K, c.norm_topk_prob);
  cpu::linear_backward(ws_.d_norm, g.router, nullptr, ws_.d_router_logits, a.norm2, w.router, N, H, E, true);

  if (c.has_shared_expert()) {
    const int Is = c.shared_expert_intermediate_size;
    // out += sigmoid(z) * s  =>  d s = sigmoid(z) d_out;  d z = sigmoid'(z) * <d_out, s>.
    float* d_shared_out = ws_.d_tmp;
    float* d_gate_logit = ws_.d_router_logits;  // reused: (N) of the (N, E) buffer, the router gradient is consumed
    for (long t = 0; t < N; ++t) {
      const float gate = sigmoid(a.shared_gate_logit[t]);
      double dot = 0.0;
      for (int h = 0; h < H; ++h) {
        d_shared_out[t * H + h] = gate * d_out[t * H + h];
        dot += static_cast<double>(d_out[t * H + h]) * a.shared_out[t * H + h];
      }
      d_gate_logit[t] = static_cast<float>(dot * gate * (1.0f - gate));
    }
    cpu::linear_backward(ws_.d_norm, g.shared_gate, nullptr, d_gate_logit, a.norm2, w.shared_gate, N, H, 1, true);
    swiglu_mlp_backward(ws_.d_norm, g.shared_gate_up, g.shared_down, ws_.d_act, ws_.d_gate_up, d_shared_out,
                        a.shared_gate_up, a.shared_act, a.norm2, w.shared_gate_up, w.shared_down, N, H, Is, true);
  }
}

}  // namespace moetune
