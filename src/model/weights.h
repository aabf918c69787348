// Why: the parameters of the generic MoE decoder, as pointers into one flat fp32 buffer. The same struct describes the
// gradients (same layout, another buffer), so "for every parameter" loops (grad norm, AdamW, zeroing) run over one flat
// array, and layer code reads like the math. Internally, a SwiGLU MLP keeps gate and up projections stacked in one
// matrix (2*I, H) — rows [0, I) gate, [I, 2I) up — exactly as Transformers v5 stores fused experts; every Hugging Face
// tensor (per-expert or fused) is a contiguous slice of one of these parameters (see model/hf_names.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace moetune {

struct LayerWeights {
  float* input_norm = nullptr;  // (H)
  float* q_proj = nullptr;      // (Q, H), Q = heads * head_dim
  float* q_bias = nullptr;      // (Q) or null
  float* k_proj = nullptr;      // (KV, H), KV = kv_heads * head_dim
  float* k_bias = nullptr;      // (KV) or null
  float* v_proj = nullptr;      // (KV, H)
  float* v_bias = nullptr;      // (KV) or null
  float* o_proj = nullptr;      // (H, Q)
  float* o_bias = nullptr;      // (H) or null
  float* q_norm = nullptr;      // (head_dim) per-head | (Q) full width | null
  float* k_norm = nullptr;      // (head_dim) per-head | (KV) full width | null
  float* post_norm = nullptr;   // (H)

  // Sparse layers
  float* router = nullptr;           // (E, H)
  float* experts_gate_up = nullptr;  // (E, 2*I, H)
  float* experts_down = nullptr;     // (E, H, I)
  float* shared_gate_up = nullptr;   // (2*Is, H) or null
  float* shared_down = nullptr;      // (H, Is) or null
  float* shared_gate = nullptr;      // (1, H) or null

  // Dense layers
  float* mlp_gate_up = nullptr;  // (2*Id, H)
  float* mlp_down = nullptr;     // (H, Id)
};

struct ModelWeights {
  float* embed = nullptr;       // (V, H)
  std::vector<LayerWeights> layers;
  float* final_norm = nullptr;  // (H)
  float* lm_head = nullptr;     // (V, H); equals embed when tie_word_embeddings
};

struct ParamInfo {
  std::string name;            // Transformers v5 in-memory name where one exists (e.g. model.layers.0.mlp.experts.gate_up_proj)
  std::vector<int64_t> shape;
  size_t offset = 0;           // in floats, into the flat buffer
  size_t numel = 0;
  bool weight_decay = false;   // matrices decay; biases and norm weights do not (Hugging Face Trainer's rule)
};

// The list of parameters of a config, in a fixed order, with offsets into a flat buffer.
class ParamLayout {
 public:
  explicit ParamLayout(const ModelConfig& config);
  const std::vector<ParamInfo>& params() const { return params_; }
  size_t total_floats() const { return total_; }
  const ParamInfo* find(const std::string& name) const;
  // Points a ModelWeights into `base` (a buffer of total_floats()).
  ModelWeights bind(float* base) const;

 private:
  ModelConfig config_;
  std::vector<ParamInfo> params_;
  size_t total_ = 0;
};

}  // namespace moetune
