// Why: see geometries.h. Each geometry is the config.json Transformers would write for the baseline's config object.
#include "model/geometries.h"

#include "core/error.h"

namespace moetune {

namespace {

nlohmann::json qwen3_30b_a3b(int layers) {
  return {{"architectures", {"Qwen3MoeForCausalLM"}},
          {"model_type", "qwen3_moe"},
          {"vocab_size", 151936},
          {"hidden_size", 2048},
          {"num_attention_heads", 32},
          {"num_key_value_heads", 4},
          {"head_dim", 128},
          {"num_experts", 128},
          {"num_experts_per_tok", 8},
          {"moe_intermediate_size", 768},
          {"intermediate_size", 6144},
          {"norm_topk_prob", true},
          {"num_hidden_layers", layers},
          {"output_router_logits", true},
          {"router_aux_loss_coef", 0.001},
          {"rope_theta", 1e6},
          {"rms_norm_eps", 1e-6},
          {"tie_word_embeddings", false},
          {"initializer_range", 0.02}};
}

nlohmann::json olmoe_1b_7b(int layers) {
  return {{"architectures", {"OlmoeForCausalLM"}},
          {"model_type", "olmoe"},
          {"vocab_size", 50304},
          {"hidden_size", 2048},
          {"intermediate_size", 1024},
          {"num_hidden_layers", layers},
          {"num_attention_heads", 16},
          {"num_key_value_heads", 16},
          {"num_experts", 64},
          {"num_experts_per_tok", 8},
          {"norm_topk_prob", false},
          {"router_aux_loss_coef", 0.01},
          {"output_router_logits", true},
          {"rope_theta", 1e4},
          {"rms_norm_eps", 1e-5},
          {"tie_word_embeddings", false},
          {"initializer_range", 0.02}};
}

}  // namespace

ModelConfig named_geometry(const std::string& name, int num_layers) {
  if (name == "qwen3-30b-a3b-slice") return parse_config(qwen3_30b_a3b(num_layers > 0 ? num_layers : 8), "geometry " + name);
  if (name == "qwen3-30b-a3b") return parse_config(qwen3_30b_a3b(num_layers > 0 ? num_layers : 48), "geometry " + name);
  if (name == "olmoe-1b-7b") return parse_config(olmoe_1b_7b(num_layers > 0 ? num_layers : 16), "geometry " + name);
  if (name == "tiny") {
    nlohmann::json tiny = builtin_tiny_config().source;
    if (num_layers > 0) tiny["num_hidden_layers"] = num_layers;
    return parse_config(tiny, "geometry tiny");
  }
  fail("unknown geometry \"", name, "\" (known: qwen3-30b-a3b-slice, qwen3-30b-a3b, olmoe-1b-7b, tiny)");
}

}  // namespace moetune
