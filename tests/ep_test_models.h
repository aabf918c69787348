// Why: the tests of what ranks of an expert-parallel run save and resume (tests/test_cooperative_save.cpp,
// tests/test_sharded_resume.cpp) need the same models — every family shape that matters to an expert shard —
// and values in which a misplaced element shows. Header-only, like the other test helpers.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "test_util.h"
#include "model/config.h"

namespace moetune::testing {

// Configs with 8 experts (EP 1, 2 and 4 divide them): the built-in tiny Qwen3-MoE (a dense layer), Qwen2-MoE (shared
// experts, replicated) and Mixtral (block_sparse_moe names).
inline std::vector<ModelConfig> eight_expert_configs() {
  std::vector<ModelConfig> configs = {builtin_tiny_config()};
  for (const auto& [family, field] : {std::pair{"qwen2_moe", "num_experts"}, std::pair{"mixtral", "num_local_experts"}}) {
    nlohmann::json json = test_util::read_json(test_util::golden_folder(family) + "/config.json");
    json[field] = 8;
    configs.push_back(parse_config(json, std::string(family) + " test config"));
  }
  return configs;
}

// `count` values in [-1, 1] on a grid of 1e-6, exact in fp32 round trips, different for every seed.
inline std::vector<float> random_values(size_t count, uint64_t seed) {
  std::mt19937_64 generator(seed);
  std::vector<float> values(count);
  for (float& value : values) value = static_cast<float>(static_cast<int64_t>(generator() % 2000001) - 1000000) * 1e-6f;
  return values;
}

}  // namespace moetune::testing
