// Why: the tests of what ranks of an expert-parallel run save and resume (tests/test_cooperative_save.cpp,
// tests/test_sharded_resume.cpp) need the same models — every family shape that matters to an expert shard —
// and values in which a misplaced element shows. Header-only, like the other test helpers.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "test_util.h"
#include "model/config.h"
#include "model/weights.h"

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

// The three full-layout arenas a checkpoint holds (model/weights.h offsets).
struct FullArenas {
  std::vector<float> params, exp_avg, exp_avg_sq;
};

// random_values in every parameter of `config`'s layout, zero in its alignment gaps as in every arena moetune holds.
inline FullArenas random_full_arenas(const ModelConfig& config) {
  const ParamLayout layout(config);
  FullArenas arenas;
  uint64_t seed = 21;
  for (std::vector<float>* arena : {&arenas.params, &arenas.exp_avg, &arenas.exp_avg_sq}) {
    *arena = random_values(layout.total_floats(), seed++);
    size_t end = 0;
    for (const ParamInfo& p : layout.params()) {
      std::fill(arena->begin() + static_cast<std::ptrdiff_t>(end), arena->begin() + static_cast<std::ptrdiff_t>(p.offset), 0.0f);
      end = p.offset + p.numel;
    }
    std::fill(arena->begin() + static_cast<std::ptrdiff_t>(end), arena->end(), 0.0f);
  }
  return arenas;
}

}  // namespace moetune::testing
