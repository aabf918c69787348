// Why: see expert_shard.h.
#include "parallel/expert_shard.h"

#include <algorithm>

#include "core/error.h"

namespace moetune::parallel {

ModelConfig expert_shard_config(const ModelConfig& full, int begin, int count) {
  if (full.num_experts < 1) fail("expert sharding: the model (", full.model_type, ") has no routed experts");
  if (begin < 0 || count < 1 || begin + count > full.num_experts)
    fail("expert sharding: experts [", begin, ", ", begin + count, ") are outside the model's ", full.num_experts);
  ModelConfig shard = full;
  shard.expert_shard_begin = begin;
  shard.experts_held = count;
  return shard;
}

ModelConfig unsharded_config(const ModelConfig& shard) {
  ModelConfig full = shard;
  full.expert_shard_begin = 0;
  full.experts_held = 0;
  return full;
}

std::function<bool(int, int)> held_experts_filter(const ModelConfig& shard, std::function<bool(int, int)> outer) {
  if (!shard.experts_sharded()) return outer;
  const int begin = shard.expert_shard_begin, end = begin + shard.held_experts();
  return [begin, end, outer = std::move(outer)](int layer, int expert) {
    return expert >= begin && expert < end && (!outer || outer(layer, expert));
  };
}

ShardOffsetMap::ShardOffsetMap(const ModelConfig& full, const ModelConfig& shard) : full_(full), shard_(shard) {
  const int begin = shard.expert_shard_begin, held = shard.held_experts();
  for (const ParamInfo& p : full_.params()) {
    const ParamInfo* local = shard_.find(p.name);
    MT_ASSERT(local != nullptr);
    Range range{p.offset, p.offset + p.numel, local->offset, 0, p.numel};
    if (local->numel != p.numel) {  // an expert tensor (E, ...) held as (held, ...)
      const size_t per_expert = p.numel / static_cast<size_t>(full.num_experts);
      range.held_begin = per_expert * static_cast<size_t>(begin);
      range.held_end = range.held_begin + per_expert * static_cast<size_t>(held);
    }
    ranges_.push_back(range);
  }
  std::sort(ranges_.begin(), ranges_.end(), [](const Range& a, const Range& b) { return a.full_begin < b.full_begin; });
}

size_t ShardOffsetMap::to_shard(size_t full_offset, size_t numel) const {
  auto it = std::upper_bound(ranges_.begin(), ranges_.end(), full_offset,
                             [](size_t offset, const Range& r) { return offset < r.full_begin; });
  if (it == ranges_.begin()) fail("expert sharding: offset ", full_offset, " precedes every parameter");
  const Range& r = *std::prev(it);
  const size_t relative = full_offset - r.full_begin;
  if (full_offset + numel > r.full_end || relative < r.held_begin || relative + numel > r.held_end)
    fail("expert sharding: elements [", full_offset, ", ", full_offset + numel, ") are not held by this shard");
  return r.shard_begin + (relative - r.held_begin);
}

void ShardedSink::write(const HfTensor& dest, const TensorEntry& src, int worker) {
  HfTensor moved = dest;
  moved.offset = map_.to_shard(dest.offset, dest.numel);
  inner_.write(moved, src, worker);
}

}  // namespace moetune::parallel
