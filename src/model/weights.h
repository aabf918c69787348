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

template <class T>
struct LayerParams {
  T* input_norm = nullptr;  // (H)
  T* q_proj = nullptr;      // (Q, H), Q = heads * head_dim
  T* q_bias = nullptr;      // (Q) or null
  T* k_proj = nullptr;      // (KV, H), KV = kv_heads * head_dim
  T* k_bias = nullptr;      // (KV) or null
  T* v_proj = nullptr;      // (KV, H)
  T* v_bias = nullptr;      // (KV) or null
  T* o_proj = nullptr;      // (H, Q)
  T* o_bias = nullptr;      // (H) or null
  T* q_norm = nullptr;      // (head_dim) per-head | (Q) full width | null
  T* k_norm = nullptr;      // (head_dim) per-head | (KV) full width | null
  T* post_norm = nullptr;   // (H)

  // Sparse layers
  T* router = nullptr;           // (E, H)
  T* experts_gate_up = nullptr;  // (Eh, 2*I, H), Eh = held_experts() (E unless experts are sharded)
  T* experts_down = nullptr;     // (Eh, H, I)
  T* shared_gate_up = nullptr;   // (2*Is, H) or null
  T* shared_down = nullptr;      // (H, Is) or null
  T* shared_gate = nullptr;      // (1, H) or null

  // Dense layers
  T* mlp_gate_up = nullptr;  // (2*Id, H)
  T* mlp_down = nullptr;     // (H, Id)
};

template <class T>
struct ModelParams {
  T* embed = nullptr;       // (V, H)
  std::vector<LayerParams<T>> layers;
  T* final_norm = nullptr;  // (H)
  T* lm_head = nullptr;     // (V, H); equals embed when tie_word_embeddings
};

// fp32 parameters or gradients (CPU engine); the GPU engine binds the same layout to 16-bit storage.
using LayerWeights = LayerParams<float>;
using ModelWeights = ModelParams<float>;
using ModelWeights16 = ModelParams<uint16_t>;

struct ParamInfo {
  std::string name;            // Transformers v5 in-memory name where one exists (e.g. model.layers.0.mlp.experts.gate_up_proj)
  std::vector<int64_t> shape;
  size_t offset = 0;           // in floats, into the flat buffer
  size_t numel = 0;
  bool weight_decay = false;   // matrices decay; biases and norm weights do not (Hugging Face Trainer's rule)
};

// The list of parameters of a config, in a fixed order, with offsets into a flat buffer. Every offset is a multiple of
// kParamAlignment elements (gaps stay zero), so any parameter or run of parameters can be processed with 16-byte
// vector accesses in 16-bit storage.
class ParamLayout {
 public:
  static constexpr size_t kParamAlignment = 8;
  explicit ParamLayout(const ModelConfig& config);
  const std::vector<ParamInfo>& params() const { return params_; }
  size_t total_floats() const { return total_; }  // buffer elements, gaps included
  size_t parameter_count() const;                 // sum of the parameters' sizes
  const ParamInfo* find(const std::string& name) const;
  // Points a ModelWeights into `base` (a buffer of total_floats() elements).
  ModelWeights bind(float* base) const;
  // The same layout over 16-bit elements (bf16 storage of the GPU engine).
  ModelWeights16 bind16(uint16_t* base) const;
  // Parameter i (params() order) at base + offsets[i] instead, or null where offsets[i] is kUnbound: a buffer that
  // holds only some parameters, packed (the GPU trainer's gradient groups).
  static constexpr size_t kUnbound = SIZE_MAX;
  ModelWeights16 bind16(uint16_t* base, const std::vector<size_t>& offsets) const;

 private:
  ModelConfig config_;
  std::vector<ParamInfo> params_;
  size_t total_ = 0;
};

}  // namespace moetune
