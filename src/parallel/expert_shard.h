// Why: with expert parallelism a rank holds only its block of routed experts, so its parameter, gradient and optimizer
// arenas must shrink with the EP size — otherwise memory per GPU would not fall as GPUs are added. The rank's model is
// then the full model with the expert tensors cut to its block (ModelConfig::expert_shard_begin / experts_held). Hugging
// Face checkpoints always describe the whole model, so loading and saving speak the full layout; this file translates:
// a flat offset of the full layout to the rank's layout (ShardOffsetMap), and a loader sink that writes a full-layout
// piece into a sharded arena (ShardedSink) — the streaming loader, run with the full config and the owned-experts
// filter, then fills a sharded arena without knowing about sharding.
#pragma once

#include <cstddef>
#include <functional>
#include <vector>

#include "io/streaming_loader.h"
#include "model/config.h"
#include "model/weights.h"

namespace moetune::parallel {

// The full model cut to experts [begin, begin + count) of every MoE layer. Throws moetune::Error for a block outside
// [0, num_experts) or a model without routed experts.
ModelConfig expert_shard_config(const ModelConfig& full, int begin, int count);

// The whole model a shard (or the whole model itself) belongs to: every expert held.
ModelConfig unsharded_config(const ModelConfig& shard);

// The filter LoadOptions::owns_expert takes for what `shard` holds, and'ed with `outer` when given; empty (every
// expert) for a config that holds all of them and no outer filter.
std::function<bool(int layer, int expert)> held_experts_filter(const ModelConfig& shard,
                                                               std::function<bool(int, int)> outer = {});

// Offsets of the full layout -> offsets of a shard's layout, for runs that lie inside one parameter and, for an
// expert tensor, inside the shard's experts.
class ShardOffsetMap {
 public:
  ShardOffsetMap(const ModelConfig& full, const ModelConfig& shard);
  // Throws moetune::Error when [offset, offset + numel) is not one run of a single parameter held by the shard.
  size_t to_shard(size_t full_offset, size_t numel) const;
  const ParamLayout& full_layout() const { return full_; }
  const ParamLayout& shard_layout() const { return shard_; }

 private:
  struct Range {
    size_t full_begin = 0, full_end = 0;  // the parameter's elements in the full layout
    size_t shard_begin = 0;               // where the held part starts in the shard layout
    size_t held_begin = 0, held_end = 0;  // the held part, as offsets relative to full_begin
  };
  ParamLayout full_, shard_;
  std::vector<Range> ranges_;  // ascending full_begin
};

// Forwards each piece to `inner` with its destination moved from the full layout to the shard's. Use with
// stream_hf_weights(folder, full config, full layout, sink, {owns_expert = the shard's filter}).
class ShardedSink final : public TensorSink {
 public:
  ShardedSink(const ShardOffsetMap& map, TensorSink& inner) : map_(map), inner_(inner) {}
  void begin(int workers) override { inner_.begin(workers); }
  void write(const HfTensor& dest, const TensorEntry& src, int worker) override;
  void end() override { inner_.end(); }

 private:
  const ShardOffsetMap& map_;
  TensorSink& inner_;
};

}  // namespace moetune::parallel
