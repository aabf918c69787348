// Why: the tiny models the GPU engine tests share (test_cuda_engine.cpp compares them with the CPU reference,
// test_cuda_engine_recompute.cpp with themselves): one config per family and feature, bf16-exact random weights with
// random biases, and random batches.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "api/model.h"
#include "core/dtype.h"
#include "model/config.h"
#include "train/data.h"

namespace moetune::testing {

// "qwen3_moe", "mixtral", "olmoe", "qwen2_moe" (shared expert, q/k/v biases), "olmoe_clip" (clip_qkv, q/k/v/o
// biases) or "mixtral_wide" (experts wider than the hidden size, both multiples of 64, as in Mixtral 8x7B).
inline nlohmann::json tiny_json(const std::string& family) {
  nlohmann::json j = {{"vocab_size", 256}, {"hidden_size", 64}, {"num_hidden_layers", 3}, {"num_attention_heads", 4},
                      {"num_key_value_heads", 2}, {"num_experts_per_tok", 2}, {"rms_norm_eps", 1e-6},
                      {"rope_theta", 10000.0}, {"output_router_logits", true}, {"router_aux_loss_coef", 0.02},
                      {"initializer_range", 0.1}, {"tie_word_embeddings", false}};
  if (family == "qwen3_moe") {
    // Widths that are multiples of 64, so the experts run on moetune's own grouped GEMM (the others use cuBLAS's).
    j.update({{"model_type", "qwen3_moe"}, {"hidden_size", 128}, {"head_dim", 32}, {"num_experts", 8},
              {"moe_intermediate_size", 64}, {"intermediate_size", 96}, {"mlp_only_layers", {0}}, {"norm_topk_prob", true}});
  } else if (family == "mixtral") {
    j.update({{"model_type", "mixtral"}, {"num_local_experts", 6}, {"intermediate_size", 48}, {"sliding_window", 24}});
  } else if (family == "mixtral_wide") {
    j.update({{"model_type", "mixtral"}, {"num_local_experts", 6}, {"intermediate_size", 128}, {"sliding_window", 24}});
  } else if (family == "qwen2_moe") {
    // Routed experts 64 wide (moetune's grouped GEMM), a shared expert of another width, a dense layer, q/k/v biases.
    j.update({{"model_type", "qwen2_moe"}, {"num_experts", 8}, {"moe_intermediate_size", 64},
              {"shared_expert_intermediate_size", 48}, {"intermediate_size", 96}, {"mlp_only_layers", {1}},
              {"norm_topk_prob", false}, {"qkv_bias", true}});
  } else {
    j.update({{"model_type", "olmoe"}, {"num_experts", 8}, {"intermediate_size", 32}, {"norm_topk_prob", false},
              {"pad_token_id", 1}});
    // clip_qkv at 3 standard deviations of q and k (unit RMS after the full-width norm). Measured on the CPU reference
    // with this test's weights and batch: dropping the clamp moves the q/k projection, bias and norm gradients by
    // 10-23%, while moving the bound by 0.5% (about the bf16 noise of q and k there, which flips entries between
    // clamped and passed) moves them by at most 2%; at 2.5 the latter reached 11%, at 3.5 the former fell under 3%.
    if (family == "olmoe_clip") j.update({{"clip_qkv", 3.0}, {"attention_bias", true}});
  }
  return j;
}

// Biases start at zero (as Transformers initialises them); random ones make the forward's bias adds visible in the
// loss and in every gradient upstream of them.
inline void randomize_biases(Model& model, uint64_t seed) {
  std::mt19937_64 generator(seed);
  std::normal_distribution<float> normal(0.0f, 0.2f);
  for (const ParamInfo& info : model.layout().params())
    if (info.name.ends_with(".bias"))
      for (size_t i = 0; i < info.numel; ++i) model.params()[info.offset + i] = normal(generator);
}

// The model the CPU and GPU engines are compared on: random weights and biases, rounded to bf16 so both see the same.
inline Model bf16_model(const ModelConfig& config, uint64_t seed) {
  Model model = Model::from_config(config, seed);
  randomize_biases(model, seed + 1000);
  for (size_t i = 0; i < model.buffer_size(); ++i) model.params()[i] = bf16_to_f32(f32_to_bf16(model.params()[i]));
  return model;
}

inline Batch random_batch(int batch, int seq, int vocab, uint64_t seed) {
  std::mt19937_64 generator(seed);
  Batch b{batch, seq, {}, {}};
  for (int i = 0; i < batch * seq; ++i) b.input_ids.push_back(static_cast<int32_t>(generator() % vocab));
  b.labels = b.input_ids;
  for (int i = seq - 5; i < seq; ++i) b.labels[i] = kIgnoreLabel;  // a padded tail in row 0
  return b;
}

}  // namespace moetune::testing
