// Why: the fp32 CPU reference of the whole model — forward, loss and backward written out per layer, like llm.c.
// It is the oracle the CUDA backend is tested against, and it is itself tested against Transformers' own gradients.
// All activations for one (batch, seq_len) shape live in one arena sized at construction; backward scratch in another.
#pragma once

#include <cstdint>
#include <vector>

#include "core/arena.h"
#include "model/config.h"
#include "model/weights.h"
#include "ops/cpu/moe_experts.h"

namespace moetune {

// What one forward pass measured. The loss Transformers reports is ce_sum / counted + router_aux_loss_coef * aux.
struct LossParts {
  double ce_sum = 0.0;   // summed token cross-entropy
  int64_t counted = 0;   // positions with a label (not -100)
  double aux = 0.0;      // load-balancing loss over all sparse layers (0 when the model has none)
};

class CpuEngine {
 public:
  CpuEngine(const ModelConfig& config, int batch, int seq_len);

  // input_ids, labels: (batch, seq_len) row-major; labels unshifted, -100 ignored. Keeps activations for backward().
  // Packed rows (several documents per sequence) also pass positions (batch, seq_len), the RoPE position of each token
  // (restarting at 0 per document), and doc_start (batch, seq_len), the row position where each token's document
  // begins (attention stays inside it, ops/cpu/attention.h). Both nullptr: positions t % seq_len and no document mask,
  // exactly the unpacked computation.
  LossParts forward(const ModelWeights& weights, const int32_t* input_ids, const int32_t* labels,
                    const int32_t* positions = nullptr, const int32_t* doc_start = nullptr);

  // Accumulates into `grads` the gradient of ce_scale * ce_sum + aux_scale * aux at the last forward's point.
  void backward(const ModelWeights& weights, const ModelWeights& grads, float ce_scale, float aux_scale);

  const float* logits() const { return logits_; }  // (batch, seq_len, vocab) of the last forward
  int batch() const { return batch_; }
  int seq_len() const { return seq_len_; }
  size_t activation_bytes() const { return activations_.bytes() + workspace_.bytes(); }

 private:
  struct LayerActivations {
    float* input;            // (N, H) residual stream entering the layer
    float* norm1_rstd;       // (N)
    float* norm1;            // (N, H)
    float* q_proj;           // (N, Q) projection (+ bias)
    float* k_proj;           // (N, KV)
    float* v_proj;           // (N, KV) before clipping
    float* q_rstd;           // (N * heads) per-head norm | (N) full-width norm
    float* k_rstd;           // (N * kv_heads) | (N)
    float* q_normed;         // (N, Q) after q norm, before clipping
    float* k_normed;         // (N, KV)
    float* q;                // (N, Q) attention input: clipped, rotated
    float* k;                // (N, KV)
    float* v;                // (N, KV) clipped
    float* probs;            // (B, heads, T, T)
    float* attn_out;         // (N, Q)
    float* mid;              // (N, H) residual stream after attention
    float* norm2_rstd;       // (N)
    float* norm2;            // (N, H)
    // Sparse layers
    float* router_logits;    // (N, E)
    float* router_probs;     // (N, E)
    int32_t* top_index;      // (N, k)
    float* top_weight;       // (N, k)
    cpu::MoeRouting routing;
    cpu::MoeSaved experts;
    float* shared_gate_up;   // (N, 2 Is)
    float* shared_act;       // (N, Is)
    float* shared_out;       // (N, H) shared expert output before its gate
    float* shared_gate_logit;  // (N)
    // Dense layers
    float* mlp_gate_up;      // (N, 2 Id)
    float* mlp_act;          // (N, Id)
  };
  struct Workspace {
    float* mlp_out;          // (N, H)
    float* d_stream;         // (N, H) gradient of the residual stream
    float* d_mid;            // (N, H)
    float* d_norm;           // (N, H)
    float* d_tmp;            // (N, H)
    float* d_attn;           // (N, Q)
    float* d_q;              // (N, Q)
    float* d_k;              // (N, KV)
    float* d_v;              // (N, KV)
    float* d_logits;         // (N, V)
    float* d_act;            // (N, max(Id, Is))
    float* d_gate_up;        // (N, 2 max(Id, Is))
    float* d_router_logits;  // (N, E)
    float* d_top_weight;     // (N, k)
    float* d_probs_extra;    // (E)
    cpu::MoeScratch moe;
  };

  void carve(Arena& activations, Arena& workspace);
  void attention_forward(const LayerWeights& w, LayerActivations& a);
  void attention_backward(const LayerWeights& w, const LayerWeights& g, LayerActivations& a);
  void mlp_forward(int layer, const LayerWeights& w, LayerActivations& a, float* out);
  void mlp_backward(int layer, const LayerWeights& w, const LayerWeights& g, LayerActivations& a, float aux_scale);

  ModelConfig config_;
  int batch_, seq_len_, tokens_;
  Arena activations_, workspace_;
  std::vector<LayerActivations> layers_;
  Workspace ws_{};
  int32_t* input_ids_ = nullptr;   // (N)
  int32_t* labels_ = nullptr;      // (N)
  int32_t* positions_ = nullptr;   // (N)
  int32_t* doc_start_ = nullptr;   // (N) of the last forward, when packed
  bool packed_ = false;            // the last forward had document boundaries
  float* final_input_ = nullptr;   // (N, H)
  float* final_rstd_ = nullptr;    // (N)
  float* final_norm_ = nullptr;    // (N, H)
  float* logits_ = nullptr;        // (N, V)
  float* token_probs_ = nullptr;   // (N, V) softmax of logits
  std::vector<double> pick_counts_, prob_sums_;  // (E) load-balancing statistics of the last forward
  double balance_rows_ = 0.0;
};

}  // namespace moetune
