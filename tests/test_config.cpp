// Why: config.json decides the math; a field moetune does not understand, or a value it does not implement, must stop the
// run with one line naming the file and the field, never be ignored. These tests break one rule at a time, starting from a
// config that parses, and pin the happy paths (every golden config, v4/v5 RoPE spellings, layer kinds, pad_token_id).
#include <gtest/gtest.h>

#include <string>

#include "model/config.h"
#include "test_util.h"

namespace moetune {
namespace {

using nlohmann::json;
using test_util::error_of;

const std::string kOrigin = "/models/tiny/config.json";

json qwen3_config() {
  return json::parse(R"({
    "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "vocab_size": 96, "hidden_size": 32,
    "intermediate_size": 40, "moe_intermediate_size": 12, "num_hidden_layers": 3, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 12, "num_experts": 8, "num_experts_per_tok": 2, "norm_topk_prob": true,
    "decoder_sparse_step": 1, "mlp_only_layers": [], "hidden_act": "silu", "rms_norm_eps": 1e-6,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}, "attention_dropout": 0.0,
    "tie_word_embeddings": false, "pad_token_id": null, "use_sliding_window": false, "sliding_window": null,
    "output_router_logits": true, "router_aux_loss_coef": 0.02, "dtype": "float32"
  })");
}

json mixtral_config() {
  return json::parse(R"({
    "architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "vocab_size": 96, "hidden_size": 32,
    "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "num_local_experts": 6, "num_experts_per_tok": 2, "hidden_act": "silu", "rms_norm_eps": 1e-5,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}, "attention_dropout": 0.0,
    "router_jitter_noise": 0.0, "sliding_window": null, "tie_word_embeddings": false, "pad_token_id": null
  })");
}

json olmoe_config() {
  return json::parse(R"({
    "architectures": ["OlmoeForCausalLM"], "model_type": "olmoe", "vocab_size": 96, "hidden_size": 32,
    "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "num_experts": 8, "num_experts_per_tok": 3, "hidden_act": "silu", "rope_theta": 10000.0, "clip_qkv": null,
    "norm_topk_prob": false, "attention_bias": false, "tie_word_embeddings": false
  })");
}

// The error parse_config throws for `config`, checked to name the file and every part.
void expect_error(const json& config, std::initializer_list<std::string> parts) {
  const std::string message = error_of([&] { parse_config(config, kOrigin); });
  EXPECT_MESSAGE_HAS(message, kOrigin);
  for (const std::string& part : parts) EXPECT_MESSAGE_HAS(message, part);
}

TEST(Config, BaseConfigsParse) {
  // The starting points of the error tests below are valid, so each error test breaks exactly one rule.
  EXPECT_EQ(parse_config(qwen3_config(), kOrigin).family, Family::Qwen3Moe);
  EXPECT_EQ(parse_config(mixtral_config(), kOrigin).family, Family::Mixtral);
  EXPECT_EQ(parse_config(olmoe_config(), kOrigin).family, Family::Olmoe);
}

TEST(Config, MissingRequiredField) {
  json config = qwen3_config();
  config.erase("vocab_size");
  expect_error(config, {"\"vocab_size\"", "missing"});
  config = qwen3_config();
  config["num_experts_per_tok"] = nullptr;  // null counts as missing
  expect_error(config, {"\"num_experts_per_tok\""});
  config = mixtral_config();
  config.erase("num_local_experts");
  expect_error(config, {"num_local_experts"});
}

TEST(Config, MissingModelType) {
  json config = qwen3_config();
  config.erase("model_type");
  expect_error(config, {"\"model_type\""});
}

TEST(Config, UnknownField) {
  json config = qwen3_config();
  config["moe_capacity_factor"] = 1.25;
  expect_error(config, {"\"moe_capacity_factor\"", "unknown"});
  // A field of another family is unknown here too: OLMoE's clip_qkv means nothing to Qwen3-MoE.
  config = qwen3_config();
  config["clip_qkv"] = 8.0;
  expect_error(config, {"\"clip_qkv\""});
  config = olmoe_config();
  config["router_jitter_noise"] = 0.0;
  expect_error(config, {"\"router_jitter_noise\""});
}

TEST(Config, UnsupportedModelType) {
  json config = qwen3_config();
  config["model_type"] = "deepseek_v3";
  expect_error(config, {"model_type", "deepseek_v3"});
}

TEST(Config, WrongArchitectures) {
  json config = qwen3_config();
  config["architectures"] = {"Qwen3MoeForSequenceClassification"};
  expect_error(config, {"\"architectures\"", "Qwen3MoeForSequenceClassification"});
  config["architectures"] = {"MixtralForCausalLM"};  // another family's class under model_type qwen3_moe
  expect_error(config, {"\"architectures\"", "MixtralForCausalLM"});
}

TEST(Config, HiddenActOtherThanSilu) {
  json config = qwen3_config();
  config["hidden_act"] = "gelu";
  expect_error(config, {"\"hidden_act\"", "gelu"});
}

TEST(Config, RopeScalingYarn) {
  json config = qwen3_config();
  config["rope_scaling"] = {{"type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 32}};
  expect_error(config, {"rope_scaling", "yarn"});
  // v5 spelling: the rope type inside rope_parameters.
  config = qwen3_config();
  config["rope_parameters"] = {{"rope_type", "yarn"}, {"rope_theta", 10000.0}, {"factor", 4.0}};
  expect_error(config, {"rope_parameters", "yarn"});
  // Any other key beside a default rope type is refused too.
  config = qwen3_config();
  config["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 10000.0}, {"factor", 4.0}};
  expect_error(config, {"rope_parameters.factor"});
}

TEST(Config, AttentionDropout) {
  json config = qwen3_config();
  config["attention_dropout"] = 0.1;
  expect_error(config, {"\"attention_dropout\""});
}

TEST(Config, MixtralRouterJitterNoise) {
  json config = mixtral_config();
  config["router_jitter_noise"] = 0.01;
  expect_error(config, {"\"router_jitter_noise\""});
}

TEST(Config, HeadsNotDivisibleByKvHeads) {
  json config = qwen3_config();
  config["num_key_value_heads"] = 3;
  expect_error(config, {"num_attention_heads", "num_key_value_heads", "(3)"});
  config["num_key_value_heads"] = 0;
  expect_error(config, {"num_key_value_heads"});
}

TEST(Config, TopKAboveExpertCount) {
  json config = qwen3_config();
  config["num_experts_per_tok"] = 9;
  expect_error(config, {"num_experts_per_tok", "(9)", "(8)"});
  config = mixtral_config();
  config["num_experts_per_tok"] = 7;
  expect_error(config, {"num_experts_per_tok", "(7)", "(6)"});
  config["num_experts_per_tok"] = 0;
  expect_error(config, {"num_experts_per_tok"});
}

TEST(Config, WrongJsonType) {
  const std::pair<const char*, json> cases[] = {
      {"hidden_size", "32"},
      {"num_experts_per_tok", 2.5},
      {"num_hidden_layers", -3},
      {"tie_word_embeddings", "yes"},
      {"norm_topk_prob", 1},
      {"rms_norm_eps", "1e-6"},
      {"hidden_act", 3},
      {"mlp_only_layers", "0"},
      {"rope_parameters", "default"},
  };
  for (const auto& [field, value] : cases) {
    SCOPED_TRACE(field);
    json config = qwen3_config();
    config[field] = value;
    expect_error(config, {std::string("\"") + field});
  }
}

TEST(Config, NotAnObject) {
  const std::string message = error_of([] { parse_config(json::array({1, 2}), kOrigin); });
  EXPECT_MESSAGE_HAS(message, kOrigin, "object");
}

TEST(Config, ExpertCountSpellingsDisagree) {
  json config = qwen3_config();
  config["num_local_experts"] = 6;  // num_experts is 8
  expect_error(config, {"\"num_experts\"", "\"num_local_experts\"", "disagree"});
}

TEST(Config, ExpertCountSpellingsAgree) {
  json config = qwen3_config();
  config["num_local_experts"] = 8;
  EXPECT_EQ(parse_config(config, kOrigin).num_experts, 8);
  config.erase("num_experts");
  EXPECT_EQ(parse_config(config, kOrigin).num_experts, 8);  // Transformers' attribute_map: either spelling
}

TEST(Config, InvalidJsonFile) {
  test_util::TempFolder temp;
  test_util::write_text(temp.file("config.json"), "{\"model_type\": \"qwen3_moe\", \"vocab_size\": 96,,}");
  const std::string message = error_of([&] { load_config(temp.path()); });
  EXPECT_MESSAGE_HAS(message, temp.file("config.json"), "not valid JSON");
}

TEST(Config, MissingConfigFile) {
  test_util::TempFolder temp;
  const std::string message = error_of([&] { load_config(temp.path()); });
  EXPECT_MESSAGE_HAS(message, temp.file("config.json"), "cannot open");
}

TEST(Config, LoadConfigNamesTheFile) {
  test_util::TempFolder temp;
  json config = qwen3_config();
  config["hidden_act"] = "relu";
  test_util::write_json(temp.file("config.json"), config);
  const std::string message = error_of([&] { load_config(temp.path()); });
  EXPECT_MESSAGE_HAS(message, temp.file("config.json"), "\"hidden_act\"", "relu");
}

// --- happy paths -----------------------------------------------------------------------------------------------------

TEST(Config, EveryGoldenConfigParses) {
  const std::pair<const char*, Family> expected[] = {{"qwen3_moe", Family::Qwen3Moe},
                                                     {"mixtral", Family::Mixtral},
                                                     {"olmoe", Family::Olmoe},
                                                     {"qwen2_moe", Family::Qwen2Moe}};
  for (const auto& [family, kind] : expected) {
    SCOPED_TRACE(family);
    const std::string folder = test_util::golden_folder(family);
    const json source = test_util::read_json(folder + "/config.json");
    const ModelConfig config = load_config(folder);
    EXPECT_EQ(config.family, kind);
    EXPECT_EQ(config.model_type, family);
    EXPECT_EQ(config.architecture, source["architectures"][0].get<std::string>());
    EXPECT_EQ(config.vocab_size, source["vocab_size"].get<int>());
    EXPECT_EQ(config.hidden_size, source["hidden_size"].get<int>());
    EXPECT_EQ(config.num_layers, source["num_hidden_layers"].get<int>());
    EXPECT_EQ(config.num_heads, source["num_attention_heads"].get<int>());
    EXPECT_EQ(config.num_kv_heads, source["num_key_value_heads"].get<int>());
    EXPECT_EQ(config.top_k, source["num_experts_per_tok"].get<int>());
    const int experts = source.contains("num_experts") ? source["num_experts"].get<int>()
                                                       : source["num_local_experts"].get<int>();
    EXPECT_EQ(config.num_experts, experts);
    EXPECT_EQ(static_cast<int>(config.layer_is_sparse.size()), config.num_layers);
    EXPECT_EQ(config.source, source);  // kept as read, for save_pretrained
  }
}

TEST(Config, GoldenFamilySpecifics) {
  const ModelConfig qwen3 = load_config(test_util::golden_folder("qwen3_moe"));
  EXPECT_EQ(qwen3.qk_norm, QkNorm::PerHead);
  EXPECT_EQ(qwen3.head_dim, 12);  // explicit head_dim, not hidden_size / heads
  const ModelConfig olmoe = load_config(test_util::golden_folder("olmoe"));
  EXPECT_EQ(olmoe.qk_norm, QkNorm::FullWidth);
  EXPECT_FLOAT_EQ(olmoe.clip_qkv, 1.2f);
  const ModelConfig qwen2 = load_config(test_util::golden_folder("qwen2_moe"));
  EXPECT_TRUE(qwen2.has_shared_expert());
  EXPECT_TRUE(qwen2.attention_bias);  // qkv_bias
  const ModelConfig mixtral = load_config(test_util::golden_folder("mixtral"));
  EXPECT_TRUE(mixtral.norm_topk_prob);
  EXPECT_EQ(mixtral.head_dim, mixtral.hidden_size / mixtral.num_heads);  // head_dim: null
}

TEST(Config, BuiltinTinyConfigParses) {
  const ModelConfig config = builtin_tiny_config();
  EXPECT_EQ(config.family, Family::Qwen3Moe);
  EXPECT_GT(config.num_sparse_layers(), 0);
}

TEST(Config, RopeThetaV4AndV5SpellingsAgree) {
  json v4 = qwen3_config();
  v4.erase("rope_parameters");
  v4["rope_theta"] = 500000.0;
  v4["rope_scaling"] = nullptr;
  json v5 = qwen3_config();
  v5["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 500000.0}};
  json v4_default_type = v4;
  v4_default_type["rope_scaling"] = {{"type", "default"}};
  const double theta_v4 = parse_config(v4, kOrigin).rope_theta;
  EXPECT_EQ(theta_v4, 500000.0);
  EXPECT_EQ(parse_config(v5, kOrigin).rope_theta, theta_v4);
  EXPECT_EQ(parse_config(v4_default_type, kOrigin).rope_theta, theta_v4);
  json neither = qwen3_config();
  neither.erase("rope_parameters");
  EXPECT_EQ(parse_config(neither, kOrigin).rope_theta, 10000.0);  // Transformers' default
}

TEST(Config, LayerKindsFromMlpOnlyLayersAndSparseStep) {
  json config = qwen3_config();
  config["num_hidden_layers"] = 4;
  config["decoder_sparse_step"] = 1;
  config["mlp_only_layers"] = {0, 2};
  EXPECT_EQ(parse_config(config, kOrigin).layer_is_sparse, (std::vector<bool>{false, true, false, true}));

  config["decoder_sparse_step"] = 2;  // layers whose (index + 1) is a multiple of 2
  config["mlp_only_layers"] = {3};
  const ModelConfig parsed = parse_config(config, kOrigin);
  EXPECT_EQ(parsed.layer_is_sparse, (std::vector<bool>{false, true, false, false}));
  EXPECT_EQ(parsed.num_sparse_layers(), 1);
  EXPECT_EQ(parsed.dense_intermediate_size, 40);

  config["decoder_sparse_step"] = 1;
  config["mlp_only_layers"] = json::array();
  const ModelConfig all_sparse = parse_config(config, kOrigin);
  EXPECT_EQ(all_sparse.layer_is_sparse, (std::vector<bool>(4, true)));

  config["mlp_only_layers"] = {4};  // no such layer
  expect_error(config, {"\"mlp_only_layers\"", "4"});
  config["mlp_only_layers"] = {1};
  config["decoder_sparse_step"] = 0;
  expect_error(config, {"\"decoder_sparse_step\""});
}

TEST(Config, DenseLayersNeedIntermediateSize) {
  json config = qwen3_config();
  config["mlp_only_layers"] = {0};
  config.erase("intermediate_size");
  expect_error(config, {"\"intermediate_size\""});
}

TEST(Config, PadTokenId) {
  json config = qwen3_config();
  config["pad_token_id"] = nullptr;
  EXPECT_EQ(parse_config(config, kOrigin).padding_idx, -1);
  config.erase("pad_token_id");
  EXPECT_EQ(parse_config(config, kOrigin).padding_idx, -1);  // Qwen3-MoE has no default pad
  config["pad_token_id"] = 5;
  EXPECT_EQ(parse_config(config, kOrigin).padding_idx, 5);
  config["pad_token_id"] = 96;  // == vocab_size
  expect_error(config, {"pad_token_id", "96"});

  json olmoe = olmoe_config();
  EXPECT_FALSE(olmoe.contains("pad_token_id"));
  EXPECT_EQ(parse_config(olmoe, kOrigin).padding_idx, 1);  // OlmoeConfig's default pad_token_id=1
  olmoe["pad_token_id"] = nullptr;
  EXPECT_EQ(parse_config(olmoe, kOrigin).padding_idx, -1);
  olmoe["pad_token_id"] = 0;
  EXPECT_EQ(parse_config(olmoe, kOrigin).padding_idx, 0);
}

TEST(Config, FamilyDefaultsWhenFieldsAreAbsent) {
  // Absent fields take the value Transformers' config class would give them, or are refused where guessing could differ.
  json mixtral = mixtral_config();
  mixtral.erase("rms_norm_eps");
  mixtral.erase("rope_parameters");
  const ModelConfig parsed = parse_config(mixtral, kOrigin);
  EXPECT_FLOAT_EQ(parsed.rms_norm_eps, 1e-5f);  // MixtralConfig(rms_norm_eps=1e-5)
  EXPECT_EQ(parsed.rope_theta, 1e6);            // MixtralConfig(rope_theta=1e6)
  json qwen3 = qwen3_config();
  qwen3.erase("rms_norm_eps");
  qwen3.erase("rope_parameters");
  EXPECT_FLOAT_EQ(parse_config(qwen3, kOrigin).rms_norm_eps, 1e-6f);
  EXPECT_EQ(parse_config(qwen3, kOrigin).rope_theta, 1e4);

  json olmoe = olmoe_config();
  olmoe.erase("num_key_value_heads");  // OlmoeConfig: None means num_attention_heads
  EXPECT_EQ(parse_config(olmoe, kOrigin).num_kv_heads, 4);
  // MixtralConfig defaults num_key_value_heads to 8, Qwen3MoeConfig to 4, Qwen2MoeConfig to 16: required here.
  mixtral = mixtral_config();
  mixtral.erase("num_key_value_heads");
  expect_error(mixtral, {"\"num_key_value_heads\"", "missing"});
  qwen3 = qwen3_config();
  qwen3.erase("num_key_value_heads");
  expect_error(qwen3, {"\"num_key_value_heads\"", "missing"});
}

}  // namespace
}  // namespace moetune
