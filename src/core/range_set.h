// Why: the fused optimizer step reuses a few gradient buffers (slots) for groups of different layouts, and clears between groups
// only what the backward adds to, not the expert weight gradients it writes over (clearing those was ~10 GB of memory
// traffic per step on Qwen3-30B-A3B). What may still hold values is then a set of element ranges per buffer, and a
// group must clear the part of it that it adds to. RangeSet is that bookkeeping: disjoint half-open ranges, kept sorted
// and merged.
#pragma once

#include <cstddef>
#include <vector>

namespace moetune {

struct Range {
  size_t begin = 0, end = 0;  // [begin, end)
  bool operator==(const Range& other) const { return begin == other.begin && end == other.end; }
};

class RangeSet {
 public:
  void add(Range range);
  void remove(Range range);
  // The parts of this set inside `range`, ascending.
  std::vector<Range> intersection(Range range) const;
  const std::vector<Range>& ranges() const { return ranges_; }  // disjoint, ascending, none empty, none adjacent

 private:
  std::vector<Range> ranges_;
};

}  // namespace moetune
