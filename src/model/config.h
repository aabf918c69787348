// Why: one generic MoE decoder serves every supported family; the differences between Qwen3-MoE, Mixtral, OLMoE and
// Qwen2-MoE are captured here as plain switches read from the Hugging Face config.json, and every field we do not
// understand (or a value we do not support) is an error, never silently ignored.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace moetune {

enum class Family { Qwen3Moe, Mixtral, Olmoe, Qwen2Moe };

// How q/k normalisation is applied before RoPE.
enum class QkNorm {
  None,       // Mixtral, Qwen2-MoE
  PerHead,    // Qwen3-MoE: RMSNorm over head_dim, weight (head_dim)
  FullWidth,  // OLMoE: RMSNorm over the whole projection, weights (heads*head_dim) and (kv_heads*head_dim)
};

struct ModelConfig {
  Family family = Family::Qwen3Moe;
  std::string architecture;  // e.g. "Qwen3MoeForCausalLM"
  std::string model_type;    // e.g. "qwen3_moe"

  int vocab_size = 0;
  int hidden_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  float rms_norm_eps = 1e-6f;
  double rope_theta = 10000.0;
  bool attention_bias = false;  // bias on q, k, v (and o where the family has it)
  bool o_proj_bias = false;
  QkNorm qk_norm = QkNorm::None;
  float clip_qkv = 0.0f;                 // 0 = off (OLMoE)
  std::vector<int> sliding_window;       // per layer; 0 = full causal attention
  bool tie_word_embeddings = false;
  int padding_idx = -1;                  // pad_token_id: its embedding row gets no gradient (nn.Embedding padding_idx); -1 = none

  int num_experts = 0;
  int top_k = 0;
  // Expert parallelism: this process holds the routed experts [expert_shard_begin, expert_shard_begin +
  // held_experts()) of every MoE layer (parallel/expert_shard.h); the parameter layout's expert tensors then have
  // held_experts() rows. The router still scores all num_experts. experts_held 0 = every expert (no sharding).
  int expert_shard_begin = 0;
  int experts_held = 0;
  int moe_intermediate_size = 0;
  int dense_intermediate_size = 0;       // dense MLP layers
  int shared_expert_intermediate_size = 0;  // Qwen2-MoE shared expert; 0 = none
  bool norm_topk_prob = false;
  std::vector<bool> layer_is_sparse;     // per layer: MoE block (true) or dense MLP (false)

  bool output_router_logits = false;     // the config's default for adding the load-balancing loss
  float router_aux_loss_coef = 0.0f;
  float initializer_range = 0.02f;

  nlohmann::json source;                 // the config.json as read, written back on save

  int q_width() const { return num_heads * head_dim; }
  int kv_width() const { return num_kv_heads * head_dim; }
  bool has_shared_expert() const { return shared_expert_intermediate_size > 0; }
  int held_experts() const { return experts_held > 0 ? experts_held : num_experts; }
  bool experts_sharded() const { return held_experts() != num_experts; }
  int num_sparse_layers() const;
};

// Parses a config.json object; `origin` names the file in error messages.
ModelConfig parse_config(const nlohmann::json& json, const std::string& origin);
// Reads and parses <folder>/config.json.
ModelConfig load_config(const std::string& folder);
// The embedded default model: a tiny Qwen3-MoE that trains on the CPU in about a minute.
ModelConfig builtin_tiny_config();

}  // namespace moetune
