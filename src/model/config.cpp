// Why: reads a Hugging Face config.json into ModelConfig. Each family lists the fields it understands; a field outside
// those lists, or a value we do not implement (another activation, rope scaling, dropout, jitter), is an error that names
// the file and the field, so a model is never trained with silently different math.
#include "model/config.h"

#include <fstream>
#include <set>

#include "core/error.h"

namespace moetune {

namespace {

using nlohmann::json;

// Fields that do not change the training math (ids, caching, bookkeeping written by save_pretrained).
const std::set<std::string> kNeutralFields = {
    "architectures", "model_type", "transformers_version", "torch_dtype", "dtype", "bos_token_id", "eos_token_id",
    "use_cache", "max_position_embeddings", "initializer_range", "return_dict", "output_hidden_states",
    "output_attentions", "tokenizer_class", "id2label", "label2id", "problem_type", "chunk_size_feed_forward",
    "is_encoder_decoder", "tie_encoder_decoder", "torchscript", "use_return_dict", "max_window_layers",
};

struct FamilyInfo {
  Family family;
  const char* model_type;
  const char* architecture;
  std::set<std::string> fields;  // fields this family understands, beyond kNeutralFields
};

const std::vector<FamilyInfo>& families() {
  static const std::set<std::string> common = {
      "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "hidden_act",
      "rms_norm_eps", "rope_theta", "rope_parameters", "rope_scaling", "attention_dropout", "tie_word_embeddings",
      "output_router_logits", "router_aux_loss_coef", "num_experts_per_tok", "intermediate_size", "head_dim",
      "partial_rotary_factor", "pad_token_id", "num_experts", "num_local_experts"};
  auto with = [&](std::initializer_list<const char*> extra) {
    std::set<std::string> fields = common;
    for (const char* field : extra) fields.insert(field);
    return fields;
  };
  static const std::vector<FamilyInfo> table = {
      {Family::Qwen3Moe, "qwen3_moe", "Qwen3MoeForCausalLM",
       with({"attention_bias", "use_sliding_window", "sliding_window", "decoder_sparse_step", "moe_intermediate_size",
             "norm_topk_prob", "mlp_only_layers"})},
      {Family::Mixtral, "mixtral", "MixtralForCausalLM", with({"sliding_window", "router_jitter_noise"})},
      {Family::Olmoe, "olmoe", "OlmoeForCausalLM", with({"attention_bias", "clip_qkv", "norm_topk_prob"})},
      {Family::Qwen2Moe, "qwen2_moe", "Qwen2MoeForCausalLM",
       with({"qkv_bias", "use_sliding_window", "sliding_window", "layer_types", "decoder_sparse_step",
             "moe_intermediate_size", "shared_expert_intermediate_size", "norm_topk_prob", "mlp_only_layers"})},
  };
  return table;
}

// Typed field access with errors that name the file and the field.
class Fields {
 public:
  Fields(const json& object, const std::string& origin) : object_(object), origin_(origin) {}

  bool has(const char* name) const { return object_.contains(name) && !object_.at(name).is_null(); }

  int integer(const char* name) const {
    const json& value = require(name);
    if (!value.is_number_integer() || value.get<int64_t>() < 0 || value.get<int64_t>() > (1 << 30))
      fail(origin_, ": field \"", name, "\" must be a non-negative integer, found ", value.dump());
    return value.get<int>();
  }
  int integer_or(const char* name, int fallback) const { return has(name) ? integer(name) : fallback; }

  double number(const char* name) const {
    const json& value = require(name);
    if (!value.is_number()) fail(origin_, ": field \"", name, "\" must be a number, found ", value.dump());
    return value.get<double>();
  }
  double number_or(const char* name, double fallback) const { return has(name) ? number(name) : fallback; }

  bool boolean_or(const char* name, bool fallback) const {
    if (!has(name)) return fallback;
    const json& value = object_.at(name);
    if (!value.is_boolean()) fail(origin_, ": field \"", name, "\" must be true or false, found ", value.dump());
    return value.get<bool>();
  }

  std::string string_or(const char* name, const std::string& fallback) const {
    if (!has(name)) return fallback;
    const json& value = object_.at(name);
    if (!value.is_string()) fail(origin_, ": field \"", name, "\" must be a string, found ", value.dump());
    return value.get<std::string>();
  }

  const json& require(const char* name) const {
    if (!has(name)) fail(origin_, ": missing required field \"", name, "\"");
    return object_.at(name);
  }

  const std::string& origin() const { return origin_; }

 private:
  const json& object_;
  const std::string& origin_;
};

const FamilyInfo& identify_family(const json& object, const std::string& origin) {
  if (!object.contains("model_type") || !object["model_type"].is_string())
    fail(origin, ": missing required field \"model_type\"");
  const std::string model_type = object["model_type"].get<std::string>();
  for (const FamilyInfo& info : families()) {
    if (model_type != info.model_type) continue;
    if (object.contains("architectures")) {
      const json& list = object["architectures"];
      if (!list.is_array() || list.size() != 1 || !list[0].is_string() || list[0].get<std::string>() != info.architecture)
        fail(origin, ": field \"architectures\" must be [\"", info.architecture, "\"] for model_type \"", model_type,
             "\", found ", list.dump(), " (only causal-LM training is supported)");
    }
    return info;
  }
  fail(origin, ": unsupported model_type \"", model_type,
       "\" (supported: qwen3_moe, mixtral, olmoe, qwen2_moe)");
}

void reject_unknown_fields(const json& object, const FamilyInfo& info, const std::string& origin) {
  for (const auto& [key, value] : object.items()) {
    if (key.empty() || key[0] == '_' || kNeutralFields.count(key) || info.fields.count(key)) continue;
    fail(origin, ": unknown config field \"", key, "\" for model_type \"", info.model_type,
         "\" (moetune does not know how it changes the model, so it refuses to guess)");
  }
}

// default_theta: the family's rope_theta when config.json gives none (Transformers: Mixtral 1e6, the others 1e4).
double read_rope_theta(const Fields& fields, const json& object, double default_theta) {
  if (fields.has("partial_rotary_factor") && fields.number("partial_rotary_factor") != 1.0)
    fail(fields.origin(), ": field \"partial_rotary_factor\" other than 1.0 is not supported");
  double theta = fields.number_or("rope_theta", default_theta);
  for (const char* key : {"rope_scaling", "rope_parameters"}) {
    if (!fields.has(key)) continue;
    const json& rope = object.at(key);
    if (!rope.is_object()) fail(fields.origin(), ": field \"", key, "\" must be an object, found ", rope.dump());
    // The rope type first: for {"type": "yarn", "factor": 4} the error must name yarn, not the factor.
    for (const char* name : {"rope_type", "type"}) {
      if (!rope.contains(name)) continue;
      const json& value = rope.at(name);
      if (!value.is_string() || value.get<std::string>() != "default")
        fail(fields.origin(), ": field \"", key, ".", name, "\" = ", value.dump(),
             " is not supported (only \"default\" RoPE)");
    }
    for (const auto& [name, value] : rope.items()) {
      if (name == "rope_type" || name == "type") continue;  // checked above
      if (name == "rope_theta") {
        if (!value.is_number()) fail(fields.origin(), ": field \"", key, ".rope_theta\" must be a number");
        theta = value.get<double>();
      } else {
        fail(fields.origin(), ": field \"", key, ".", name, "\" is not supported");
      }
    }
  }
  if (!(theta > 0)) fail(fields.origin(), ": rope_theta must be positive, found ", theta);
  return theta;
}

std::vector<int> read_int_list(const json& object, const char* name, const std::string& origin) {
  std::vector<int> values;
  if (!object.contains(name) || object.at(name).is_null()) return values;
  const json& list = object.at(name);
  if (!list.is_array()) fail(origin, ": field \"", name, "\" must be a list of integers");
  for (const json& item : list) {
    if (!item.is_number_integer()) fail(origin, ": field \"", name, "\" must be a list of integers, found ", item.dump());
    values.push_back(item.get<int>());
  }
  return values;
}

void read_layer_kinds(const Fields& fields, const json& object, ModelConfig& config) {
  config.layer_is_sparse.assign(config.num_layers, true);
  if (config.family != Family::Qwen3Moe && config.family != Family::Qwen2Moe) return;
  const int step = fields.integer_or("decoder_sparse_step", 1);
  if (step < 1) fail(fields.origin(), ": field \"decoder_sparse_step\" must be >= 1");
  const std::vector<int> mlp_only = read_int_list(object, "mlp_only_layers", fields.origin());
  for (int layer : mlp_only)
    if (layer < 0 || layer >= config.num_layers)
      fail(fields.origin(), ": field \"mlp_only_layers\" names layer ", layer, " but the model has ", config.num_layers);
  for (int layer = 0; layer < config.num_layers; ++layer) {
    bool dense_only = false;
    for (int other : mlp_only) dense_only = dense_only || other == layer;
    config.layer_is_sparse[layer] = !dense_only && config.num_experts > 0 && (layer + 1) % step == 0;
  }
  for (bool sparse : config.layer_is_sparse)
    if (!sparse) config.dense_intermediate_size = fields.integer("intermediate_size");
}

void read_attention(const Fields& fields, const json& object, ModelConfig& config) {
  config.num_heads = fields.integer("num_attention_heads");
  // Absent num_key_value_heads means num_attention_heads only in OlmoeConfig; Mixtral/Qwen*-MoE configs default to
  // other numbers (8, 4, 16), so there the field is required rather than guessed.
  config.num_kv_heads = config.family == Family::Olmoe ? fields.integer_or("num_key_value_heads", config.num_heads)
                                                       : fields.integer("num_key_value_heads");
  if (config.num_heads == 0 || config.num_kv_heads == 0 || config.num_heads % config.num_kv_heads != 0)
    fail(fields.origin(), ": num_attention_heads (", config.num_heads, ") must be a positive multiple of num_key_value_heads (",
         config.num_kv_heads, ")");
  const bool head_dim_allowed = config.family != Family::Olmoe;
  if (head_dim_allowed && fields.has("head_dim")) {
    config.head_dim = fields.integer("head_dim");
  } else {
    if (config.hidden_size % config.num_heads != 0)
      fail(fields.origin(), ": hidden_size (", config.hidden_size, ") is not divisible by num_attention_heads (",
           config.num_heads, ")");
    config.head_dim = config.hidden_size / config.num_heads;
    if (fields.has("head_dim") && fields.integer("head_dim") != config.head_dim)
      fail(fields.origin(), ": field \"head_dim\" must equal hidden_size / num_attention_heads for ", config.model_type);
  }
  if (config.head_dim % 2 != 0) fail(fields.origin(), ": head_dim must be even for RoPE, found ", config.head_dim);
  if (fields.number_or("attention_dropout", 0.0) != 0.0)
    fail(fields.origin(), ": field \"attention_dropout\" must be 0 (attention dropout is not supported)");
  config.rope_theta = read_rope_theta(fields, object, config.family == Family::Mixtral ? 1e6 : 1e4);

  int window = 0;
  switch (config.family) {
    case Family::Qwen3Moe:
      config.attention_bias = config.o_proj_bias = fields.boolean_or("attention_bias", false);
      config.qk_norm = QkNorm::PerHead;
      if (fields.boolean_or("use_sliding_window", false)) window = fields.integer("sliding_window");
      break;
    case Family::Mixtral:
      window = fields.integer_or("sliding_window", 0);
      break;
    case Family::Olmoe:
      config.attention_bias = config.o_proj_bias = fields.boolean_or("attention_bias", false);
      config.qk_norm = QkNorm::FullWidth;
      config.clip_qkv = static_cast<float>(fields.number_or("clip_qkv", 0.0));
      if (config.clip_qkv < 0) fail(fields.origin(), ": field \"clip_qkv\" must be positive");
      break;
    case Family::Qwen2Moe:
      config.attention_bias = fields.boolean_or("qkv_bias", true);
      if (fields.boolean_or("use_sliding_window", false))
        fail(fields.origin(), ": field \"use_sliding_window\" = true is not supported for qwen2_moe");
      if (fields.has("layer_types")) {
        for (const json& kind : object.at("layer_types"))
          if (!kind.is_string() || kind.get<std::string>() != "full_attention")
            fail(fields.origin(), ": field \"layer_types\" entry ", kind.dump(), " is not supported (only full_attention)");
      }
      break;
  }
  config.sliding_window.assign(config.num_layers, window);
}

void read_experts(const Fields& fields, ModelConfig& config) {
  // Transformers maps num_experts <-> num_local_experts (attribute_map); a config may carry either, or both if equal.
  if (fields.has("num_experts") && fields.has("num_local_experts") &&
      fields.integer("num_experts") != fields.integer("num_local_experts"))
    fail(fields.origin(), ": fields \"num_experts\" and \"num_local_experts\" disagree");
  config.num_experts = fields.integer(fields.has("num_experts") ? "num_experts" : "num_local_experts");
  config.top_k = fields.integer("num_experts_per_tok");
  if (config.num_experts < 1 || config.top_k < 1 || config.top_k > config.num_experts)
    fail(fields.origin(), ": num_experts_per_tok (", config.top_k, ") must be between 1 and the number of experts (",
         config.num_experts, ")");
  const bool separate_expert_width = config.family == Family::Qwen3Moe || config.family == Family::Qwen2Moe;
  config.moe_intermediate_size = fields.integer(separate_expert_width ? "moe_intermediate_size" : "intermediate_size");
  config.norm_topk_prob = config.family == Family::Mixtral ? true : fields.boolean_or("norm_topk_prob", false);
  if (config.family == Family::Qwen2Moe) {
    config.shared_expert_intermediate_size = fields.integer("shared_expert_intermediate_size");
    if (config.shared_expert_intermediate_size == 0)
      fail(fields.origin(), ": field \"shared_expert_intermediate_size\" must be positive");
  }
  if (config.family == Family::Mixtral && fields.number_or("router_jitter_noise", 0.0) != 0.0)
    fail(fields.origin(), ": field \"router_jitter_noise\" must be 0 (router jitter is not supported)");
  config.output_router_logits = fields.boolean_or("output_router_logits", false);
  const double default_coef = config.family == Family::Olmoe ? 0.01 : 0.001;
  config.router_aux_loss_coef = static_cast<float>(fields.number_or("router_aux_loss_coef", default_coef));
}

}  // namespace

int ModelConfig::num_sparse_layers() const {
  int count = 0;
  for (bool sparse : layer_is_sparse) count += sparse ? 1 : 0;
  return count;
}

ModelConfig parse_config(const json& object, const std::string& origin) {
  if (!object.is_object()) fail(origin, ": config must be a JSON object");
  const FamilyInfo& info = identify_family(object, origin);
  reject_unknown_fields(object, info, origin);
  const Fields fields(object, origin);

  ModelConfig config;
  config.family = info.family;
  config.model_type = info.model_type;
  config.architecture = info.architecture;
  config.vocab_size = fields.integer("vocab_size");
  config.hidden_size = fields.integer("hidden_size");
  config.num_layers = fields.integer("num_hidden_layers");
  if (config.vocab_size == 0 || config.hidden_size == 0 || config.num_layers == 0)
    fail(origin, ": vocab_size, hidden_size and num_hidden_layers must be positive");
  if (fields.string_or("hidden_act", "silu") != "silu")
    fail(origin, ": field \"hidden_act\" = \"", fields.string_or("hidden_act", ""), "\" is not supported (only silu)");
  config.rms_norm_eps = static_cast<float>(fields.number_or("rms_norm_eps", info.family == Family::Qwen3Moe ||
                                                                                     info.family == Family::Qwen2Moe
                                                                                 ? 1e-6
                                                                                 : 1e-5));
  config.tie_word_embeddings = fields.boolean_or("tie_word_embeddings", false);
  // pad_token_id: absent means the family default (OLMoE: 1), null means none.
  const int default_pad = info.family == Family::Olmoe ? 1 : -1;
  config.padding_idx = object.contains("pad_token_id") ? fields.integer_or("pad_token_id", -1) : default_pad;
  if (config.padding_idx >= config.vocab_size)
    fail(origin, ": pad_token_id ", config.padding_idx, " is outside the vocabulary (", config.vocab_size, ")");
  config.initializer_range = static_cast<float>(fields.number_or("initializer_range", 0.02));

  read_experts(fields, config);
  read_attention(fields, object, config);
  read_layer_kinds(fields, object, config);
  config.source = object;
  return config;
}

ModelConfig load_config(const std::string& folder) {
  const std::string path = folder + "/config.json";
  std::ifstream file(path);
  if (!file) fail(path, ": cannot open (is ", folder, " a Hugging Face model folder?)");
  json object;
  try {
    object = json::parse(file);
  } catch (const json::exception& error) {
    fail(path, ": not valid JSON: ", error.what());
  }
  return parse_config(object, path);
}

ModelConfig builtin_tiny_config() {
  const json object = {
      {"architectures", {"Qwen3MoeForCausalLM"}},
      {"model_type", "qwen3_moe"},
      {"vocab_size", 256},
      {"hidden_size", 96},
      {"intermediate_size", 256},
      {"moe_intermediate_size", 64},
      {"num_hidden_layers", 4},
      {"num_attention_heads", 4},
      {"num_key_value_heads", 2},
      {"head_dim", 24},
      {"num_experts", 8},
      {"num_experts_per_tok", 2},
      {"norm_topk_prob", true},
      {"decoder_sparse_step", 1},
      {"mlp_only_layers", {0}},
      {"rms_norm_eps", 1e-6},
      {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", 10000.0}}},
      {"max_position_embeddings", 512},
      {"tie_word_embeddings", false},
      {"output_router_logits", true},
      {"router_aux_loss_coef", 0.01},
      {"initializer_range", 0.02},
      {"hidden_act", "silu"},
      {"torch_dtype", "float32"},
  };
  return parse_config(object, "<built-in tiny config>");
}

}  // namespace moetune
