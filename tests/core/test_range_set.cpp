// Why: a wrong range left out of the fused optimizer step's clearing adds stale gradients to the next group's
// silently, so the set's add/remove/intersection are held to a brute-force bitmap over random operations, plus the
// edge cases (empty, adjacent and nested ranges) by hand.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "core/range_set.h"

namespace moetune::testing {
namespace {

TEST(RangeSet, MergesAdjacentAndOverlappingRanges) {
  RangeSet set;
  set.add({10, 20});
  set.add({20, 30});  // adjacent
  set.add({5, 12});   // overlapping
  set.add({40, 40});  // empty: ignored
  set.add({50, 60});
  EXPECT_EQ(set.ranges(), (std::vector<Range>{{5, 30}, {50, 60}}));
  set.add({0, 100});  // covers everything
  EXPECT_EQ(set.ranges(), (std::vector<Range>{{0, 100}}));
}

TEST(RangeSet, RemoveSplitsAndIntersectionClips) {
  RangeSet set;
  set.add({0, 100});
  set.remove({40, 60});
  EXPECT_EQ(set.ranges(), (std::vector<Range>{{0, 40}, {60, 100}}));
  EXPECT_EQ(set.intersection({30, 70}), (std::vector<Range>{{30, 40}, {60, 70}}));
  EXPECT_TRUE(set.intersection({40, 60}).empty());
  set.remove({0, 100});
  EXPECT_TRUE(set.ranges().empty());
}

TEST(RangeSet, MatchesABitmapOverRandomOperations) {
  constexpr size_t kSize = 64;
  std::mt19937 rng(7);
  std::uniform_int_distribution<size_t> position(0, kSize);
  RangeSet set;
  std::vector<bool> bitmap(kSize, false);
  for (int op = 0; op < 2000; ++op) {
    size_t a = position(rng), b = position(rng);
    if (a > b) std::swap(a, b);
    const bool add = rng() % 2 == 0;
    if (add) set.add({a, b});
    else set.remove({a, b});
    for (size_t i = a; i < b; ++i) bitmap[i] = add;

    std::vector<bool> from_set(kSize, false);
    for (const Range& r : set.ranges()) {
      ASSERT_LT(r.begin, r.end);
      for (size_t i = r.begin; i < r.end; ++i) from_set[i] = true;
    }
    for (size_t k = 1; k < set.ranges().size(); ++k) ASSERT_LT(set.ranges()[k - 1].end, set.ranges()[k].begin);
    ASSERT_EQ(from_set, bitmap) << "after operation " << op;
    size_t c = position(rng), d = position(rng);
    if (c > d) std::swap(c, d);
    size_t covered = 0, expected = 0;
    for (const Range& r : set.intersection({c, d})) covered += r.end - r.begin;
    for (size_t i = c; i < d; ++i) expected += bitmap[i];
    ASSERT_EQ(covered, expected) << "intersection after operation " << op;
  }
}

}  // namespace
}  // namespace moetune::testing
