// Why: the embedding gradient is a scatter-add: repeated ids must add up, other rows must stay untouched, and the
// padding_idx row must receive nothing (PyTorch's nn.Embedding(padding_idx)). Forward is a copy, so it is compared
// exactly; the backward sums at most a few fp32 values per element, so 1e-6 relative to a double reference.
#include <gtest/gtest.h>

#include "op_test_util.h"
#include "ops/cpu/embedding.h"

namespace moetune::test {
namespace {

constexpr int kVocab = 6, kHidden = 4;
const std::vector<int32_t> kIds = {3, 0, 3, 5, 1, 3, 0};  // id 3 three times, id 2 and 4 never

TEST(CpuOpsEmbedding, ForwardCopiesTableRows) {
  const Floats table = random_floats(kVocab * kHidden, 81);
  Floats out(kIds.size() * kHidden);
  cpu::embedding_forward(out.data(), kIds.data(), table.data(), static_cast<int>(kIds.size()), kHidden);
  for (size_t t = 0; t < kIds.size(); ++t)
    for (int h = 0; h < kHidden; ++h) EXPECT_EQ(out[t * kHidden + h], table[kIds[t] * kHidden + h]);
}

TEST(CpuOpsEmbedding, BackwardScatterAddsAndSkipsPaddingRow) {
  const Floats d_out = random_floats(kIds.size() * kHidden, 82), before = random_floats(kVocab * kHidden, 83);
  for (int padding_idx : {-1, 3, 0}) {
    SCOPED_TRACE(padding_idx);
    Doubles want = to_double(before);
    for (size_t t = 0; t < kIds.size(); ++t)
      if (kIds[t] != padding_idx)
        for (int h = 0; h < kHidden; ++h) want[kIds[t] * kHidden + h] += d_out[t * kHidden + h];
    Floats d_table = before;  // accumulated
    cpu::embedding_backward(d_table.data(), d_out.data(), kIds.data(), static_cast<int>(kIds.size()), kHidden,
                            padding_idx);
    EXPECT_LT(rel_error(d_table, want), 1e-6);
    if (padding_idx >= 0) {  // exactly untouched, not merely close
      const int row = padding_idx * kHidden;
      for (int h = 0; h < kHidden; ++h) EXPECT_EQ(d_table[row + h], before[row + h]);
    }
  }
}

}  // namespace
}  // namespace moetune::test
