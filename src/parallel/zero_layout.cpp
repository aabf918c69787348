// Why: see zero_layout.h.
#include "parallel/zero_layout.h"

#include <algorithm>

#include "core/error.h"

namespace moetune::parallel {

namespace {

size_t align_up(size_t value) { return (value + kZeroAlign - 1) / kZeroAlign * kZeroAlign; }

// [begin, end) with its state at `state` and the pieces of the segment's parameters that fall in it.
ZeroPart make_part(const std::vector<ZeroParam>& params, size_t first, size_t last, size_t begin, size_t end,
                   size_t state) {
  ZeroPart part{begin, end, state, {}};
  for (size_t i = first; i < last; ++i) {
    const size_t from = std::max(begin, params[i].offset), to = std::min(end, params[i].offset + params[i].numel);
    if (from < to) part.spans.push_back({from - begin, to - from, params[i].decay});
  }
  return part;
}

}  // namespace

ZeroLayout zero_layout(const std::vector<ZeroParam>& params, int world_size, int world_rank, int replica_size,
                       int replica_rank) {
  if (world_size < 1 || world_rank < 0 || world_rank >= world_size || replica_size < 1 || replica_rank < 0 ||
      replica_rank >= replica_size)
    fail("ZeRO layout: rank ", world_rank, " of a world of ", world_size, ", rank ", replica_rank, " of ",
         replica_size, " expert replicas");
  for (size_t i = 1; i < params.size(); ++i)
    if (params[i].offset < params[i - 1].offset + params[i - 1].numel)
      fail("ZeRO layout: parameter ", i, " at offset ", params[i].offset, " overlaps or precedes the one before it");
  ZeroLayout layout;
  for (size_t first = 0; first < params.size();) {
    size_t last = first + 1;  // params [first, last): one segment
    while (last < params.size() && params[last].group == params[first].group &&
           params[last].expert == params[first].expert)
      ++last;
    ZeroSegment s;
    s.group = params[first].group;
    s.expert = params[first].expert;
    s.start = params[first].offset;
    s.end = params[last - 1].offset + params[last - 1].numel;
    s.ranks = s.expert ? replica_size : world_size;
    s.rank = s.expert ? replica_rank : world_rank;
    const size_t count = s.end - s.start;
    s.shard = s.ranks == 1 ? count : count / static_cast<size_t>(s.ranks) / kZeroAlign * kZeroAlign;
    s.own = make_part(params, first, last, s.shard_begin(s.rank), s.shard_begin(s.rank) + s.shard, layout.state_elements);
    layout.state_elements = align_up(layout.state_elements + s.own.count());
    s.tail = make_part(params, first, last, s.start + s.body(), s.end, layout.state_elements);
    layout.state_elements = align_up(layout.state_elements + s.tail.count());
    layout.segments.push_back(std::move(s));
    first = last;
  }
  return layout;
}

}  // namespace moetune::parallel
