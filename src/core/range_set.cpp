// Why: see range_set.h.
#include "core/range_set.h"

#include <algorithm>

namespace moetune {

void RangeSet::add(Range range) {
  if (range.begin >= range.end) return;
  std::vector<Range> result;
  for (const Range& r : ranges_) {
    if (r.end < range.begin || r.begin > range.end) {
      result.push_back(r);
    } else {  // overlapping or adjacent: merged into range
      range.begin = std::min(range.begin, r.begin);
      range.end = std::max(range.end, r.end);
    }
  }
  result.push_back(range);
  std::sort(result.begin(), result.end(), [](const Range& a, const Range& b) { return a.begin < b.begin; });
  ranges_ = std::move(result);
}

void RangeSet::remove(Range range) {
  if (range.begin >= range.end) return;
  std::vector<Range> result;
  for (const Range& r : ranges_) {
    if (r.begin < range.begin) result.push_back({r.begin, std::min(r.end, range.begin)});
    if (r.end > range.end) result.push_back({std::max(r.begin, range.end), r.end});
  }
  ranges_ = std::move(result);
}

std::vector<Range> RangeSet::intersection(Range range) const {
  std::vector<Range> result;
  for (const Range& r : ranges_) {
    const Range part{std::max(r.begin, range.begin), std::min(r.end, range.end)};
    if (part.begin < part.end) result.push_back(part);
  }
  return result;
}

}  // namespace moetune
