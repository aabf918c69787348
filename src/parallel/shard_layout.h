// Why: a ZeRO-1 optimizer splits one flat arena (gradients, parameters, optimizer states) into equal shards, one per
// data-parallel rank: NCCL's reduce-scatter and all-gather move equal counts per rank, so the arena is padded to
// ranks x shard elements. The boundaries must be the same on every rank and on every resume, so they are a pure
// function of (count, ranks), here, tested on the CPU.
//
// Layout of an arena of `count` elements over P ranks: shard = ceil(count / P) rounded up to `align` elements (so every
// shard starts 128-byte aligned for bf16 with the default); rank r owns [r*shard, (r+1)*shard); the arena is allocated
// with padded() = P*shard elements, and the padding [count, padded) must hold zeros (it is reduced and gathered like
// the rest; zeros keep it finite and keep every optimizer step of it a no-op).
#pragma once

#include <algorithm>
#include <cstddef>

#include "core/error.h"

namespace moetune::parallel {

constexpr size_t kShardAlignElements = 64;

struct ShardLayout {
  size_t count = 0;  // elements holding data
  int ranks = 1;
  size_t shard = 0;  // elements per rank

  size_t padded() const { return shard * static_cast<size_t>(ranks); }
  size_t begin(int rank) const { return shard * static_cast<size_t>(rank); }
  // The data elements of `rank`'s shard: [begin, data_end); shards past the data are empty, the last one may be short.
  size_t data_end(int rank) const { return std::min(count, begin(rank) + shard); }
  size_t data_count(int rank) const { return begin(rank) >= count ? 0 : data_end(rank) - begin(rank); }
};

inline ShardLayout shard_layout(size_t count, int ranks, size_t align = kShardAlignElements) {
  if (ranks < 1 || align < 1) fail("shard layout: ", ranks, " ranks, alignment ", align);
  ShardLayout layout;
  layout.count = count;
  layout.ranks = ranks;
  const size_t per_rank = (count + ranks - 1) / ranks;
  layout.shard = (per_rank + align - 1) / align * align;
  return layout;
}

}  // namespace moetune::parallel
