// Why: one walk over the model defines both the parameter table (names, shapes, offsets) and the pointer binding, so the
// two can never disagree.
#include "model/weights.h"

#include <functional>

#include "core/error.h"

namespace moetune {

namespace {

template <class T>
using Slot = std::function<void(const std::string& name, std::vector<int64_t> shape, T*& field)>;

template <class T>
void walk(const ModelConfig& c, ModelParams<T>& w, const Slot<T>& slot) {
  const int64_t H = c.hidden_size, Q = c.q_width(), KV = c.kv_width(), D = c.head_dim;
  slot("model.embed_tokens.weight", {c.vocab_size, H}, w.embed);
  w.layers.resize(c.num_layers);
  for (int l = 0; l < c.num_layers; ++l) {
    LayerParams<T>& L = w.layers[l];
    const std::string p = str("model.layers.", l, ".");
    slot(p + "input_layernorm.weight", {H}, L.input_norm);
    slot(p + "self_attn.q_proj.weight", {Q, H}, L.q_proj);
    if (c.attention_bias) slot(p + "self_attn.q_proj.bias", {Q}, L.q_bias);
    slot(p + "self_attn.k_proj.weight", {KV, H}, L.k_proj);
    if (c.attention_bias) slot(p + "self_attn.k_proj.bias", {KV}, L.k_bias);
    slot(p + "self_attn.v_proj.weight", {KV, H}, L.v_proj);
    if (c.attention_bias) slot(p + "self_attn.v_proj.bias", {KV}, L.v_bias);
    slot(p + "self_attn.o_proj.weight", {H, Q}, L.o_proj);
    if (c.o_proj_bias) slot(p + "self_attn.o_proj.bias", {H}, L.o_bias);
    if (c.qk_norm == QkNorm::PerHead) {
      slot(p + "self_attn.q_norm.weight", {D}, L.q_norm);
      slot(p + "self_attn.k_norm.weight", {D}, L.k_norm);
    } else if (c.qk_norm == QkNorm::FullWidth) {
      slot(p + "self_attn.q_norm.weight", {Q}, L.q_norm);
      slot(p + "self_attn.k_norm.weight", {KV}, L.k_norm);
    }
    slot(p + "post_attention_layernorm.weight", {H}, L.post_norm);
    if (c.layer_is_sparse[l]) {
      const int64_t E = c.num_experts, held = c.held_experts(), I = c.moe_intermediate_size;
      slot(p + "mlp.gate.weight", {E, H}, L.router);
      slot(p + "mlp.experts.gate_up_proj", {held, 2 * I, H}, L.experts_gate_up);
      slot(p + "mlp.experts.down_proj", {held, H, I}, L.experts_down);
      if (c.has_shared_expert()) {
        const int64_t Is = c.shared_expert_intermediate_size;
        slot(p + "mlp.shared_expert.gate_up_proj", {2 * Is, H}, L.shared_gate_up);
        slot(p + "mlp.shared_expert.down_proj.weight", {H, Is}, L.shared_down);
        slot(p + "mlp.shared_expert_gate.weight", {1, H}, L.shared_gate);
      }
    } else {
      const int64_t I = c.dense_intermediate_size;
      slot(p + "mlp.gate_up_proj", {2 * I, H}, L.mlp_gate_up);
      slot(p + "mlp.down_proj.weight", {H, I}, L.mlp_down);
    }
  }
  slot("model.norm.weight", {H}, w.final_norm);
  if (c.tie_word_embeddings) {
    w.lm_head = w.embed;
  } else {
    slot("lm_head.weight", {c.vocab_size, H}, w.lm_head);
  }
}

}  // namespace

ParamLayout::ParamLayout(const ModelConfig& config) : config_(config) {
  ModelWeights unused;
  walk<float>(config_, unused, [&](const std::string& name, std::vector<int64_t> shape, float*&) {
    ParamInfo info;
    info.name = name;
    info.numel = 1;
    for (int64_t dim : shape) info.numel *= static_cast<size_t>(dim);
    info.weight_decay = shape.size() >= 2;
    info.shape = std::move(shape);
    info.offset = (total_ + kParamAlignment - 1) / kParamAlignment * kParamAlignment;
    total_ = info.offset + info.numel;
    params_.push_back(std::move(info));
  });
}

size_t ParamLayout::parameter_count() const {
  size_t count = 0;
  for (const ParamInfo& info : params_) count += info.numel;
  return count;
}

const ParamInfo* ParamLayout::find(const std::string& name) const {
  for (const ParamInfo& info : params_)
    if (info.name == name) return &info;
  return nullptr;
}

namespace {
template <class T>
ModelParams<T> bind_layout(const ModelConfig& config, const std::vector<ParamInfo>& params, T* base) {
  ModelParams<T> weights;
  size_t index = 0;
  walk<T>(config, weights, [&](const std::string&, std::vector<int64_t>, T*& field) { field = base + params[index++].offset; });
  return weights;
}
}  // namespace

ModelWeights ParamLayout::bind(float* base) const { return bind_layout(config_, params_, base); }
ModelWeights16 ParamLayout::bind16(uint16_t* base) const { return bind_layout(config_, params_, base); }

ModelWeights16 ParamLayout::bind16(uint16_t* base, const std::vector<size_t>& offsets) const {
  MT_ASSERT(offsets.size() == params_.size());
  ModelWeights16 weights;
  size_t index = 0;
  walk<uint16_t>(config_, weights, [&](const std::string&, std::vector<int64_t>, uint16_t*& field) {
    const size_t offset = offsets[index++];
    field = offset == kUnbound ? nullptr : base + offset;
  });
  return weights;
}

}  // namespace moetune
