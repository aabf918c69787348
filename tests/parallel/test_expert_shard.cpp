// Why: a rank of an expert-parallel run loads its block of experts from a full Hugging Face checkpoint into an arena
// laid out for that block only; a wrong offset would silently train expert 3's weights as expert 2's. The loaded shard
// must hold exactly the full model's values: every non-expert tensor whole, every expert tensor's held rows.
#include <gtest/gtest.h>

#include "api/model.h"
#include "core/error.h"
#include "parallel/expert_shard.h"
#include "parallel/topology.h"
#include "../test_util.h"

namespace moetune::testing {
using test_util::TempFolder;
namespace {

std::string first_sparse_layer(const ModelConfig& config) {
  for (int l = 0; l < config.num_layers; ++l)
    if (config.layer_is_sparse[l]) return "model.layers." + std::to_string(l) + ".";
  return "";
}

void expect_shard_matches(const Model& full, const ModelConfig& shard_config, const std::vector<float>& shard_params) {
  const ParamLayout& full_layout = full.layout();
  const ParamLayout shard_layout(shard_config);
  const int begin = shard_config.expert_shard_begin, held = shard_config.held_experts();
  for (const ParamInfo& p : shard_layout.params()) {
    const ParamInfo* whole = full_layout.find(p.name);
    ASSERT_NE(whole, nullptr) << p.name;
    size_t skip = 0;
    if (whole->numel != p.numel) {
      ASSERT_EQ(whole->shape[0], full.config().num_experts) << p.name;
      ASSERT_EQ(p.shape[0], held) << p.name;
      skip = whole->numel / static_cast<size_t>(whole->shape[0]) * static_cast<size_t>(begin);
    }
    for (size_t i = 0; i < p.numel; ++i)
      ASSERT_EQ(shard_params[p.offset + i], full.params()[whole->offset + skip + i]) << p.name << " element " << i;
  }
}

TEST(ExpertShard, LayoutHoldsOnlyTheBlockOfExperts) {
  const ModelConfig full = builtin_tiny_config();
  const ModelConfig half = parallel::expert_shard_config(full, full.num_experts / 2, full.num_experts / 2);
  const ParamLayout full_layout(full), half_layout(half);
  const std::string layer = first_sparse_layer(full);
  const ParamInfo* full_experts = full_layout.find(layer + "mlp.experts.gate_up_proj");
  const ParamInfo* half_experts = half_layout.find(layer + "mlp.experts.gate_up_proj");
  ASSERT_NE(full_experts, nullptr);
  ASSERT_NE(half_experts, nullptr);
  EXPECT_EQ(half_experts->shape[0], full.num_experts / 2);
  EXPECT_EQ(half_layout.find(layer + "mlp.gate.weight")->shape[0], full.num_experts);  // router scores all
  EXPECT_LT(half_layout.parameter_count(), full_layout.parameter_count());
  EXPECT_THROW(parallel::expert_shard_config(full, full.num_experts - 1, 2), Error);
}

TEST(ExpertShard, ShardedLoadEqualsTheFullModelsSlices) {
  const ModelConfig config = builtin_tiny_config();
  const Model full = Model::from_config(config, 21);
  for (ExpertLayout layout : {ExpertLayout::PerExpert, ExpertLayout::Fused}) {
    TempFolder folder;
    SaveOptions save;
    save.expert_layout = layout;
    full.save_pretrained(folder.path(), save);
    const parallel::ParallelLayout ep = parallel::make_parallel_layout(2, 1, parallel::ProcessGroupInfo{0, 2, 0, 2},
                                                                       config.num_experts);
    for (int rank = 0; rank < 2; ++rank) {
      const parallel::ExpertRange range = ep.owned_experts(rank);
      const ModelConfig shard = parallel::expert_shard_config(config, range.begin, range.count());
      const parallel::ShardOffsetMap map(config, shard);
      std::vector<float> params(map.shard_layout().total_floats(), -7.0f);
      HostF32Sink host(params.data());
      parallel::ShardedSink sink(map, host);
      LoadOptions options;
      options.owns_expert = ep.owns_expert_filter(rank);
      stream_hf_weights(folder.path(), config, map.full_layout(), sink, options);
      expect_shard_matches(full, shard, params);
    }
  }
}

TEST(ExpertShard, OffsetsOutsideTheShardAreRejected) {
  const ModelConfig config = builtin_tiny_config();
  const ModelConfig shard = parallel::expert_shard_config(config, 0, config.num_experts / 2);
  const parallel::ShardOffsetMap map(config, shard);
  const ParamInfo* experts = map.full_layout().find(first_sparse_layer(config) + "mlp.experts.down_proj");
  ASSERT_NE(experts, nullptr);
  const size_t per_expert = experts->numel / static_cast<size_t>(config.num_experts);
  EXPECT_NO_THROW(map.to_shard(experts->offset, per_expert));
  EXPECT_THROW(map.to_shard(experts->offset + per_expert * (config.num_experts - 1), per_expert), Error);
}

}  // namespace
}  // namespace moetune::testing
