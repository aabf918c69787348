// Why: the loss defines what is trained; an off-by-one in the label shift, a counted ignored label (-100) or a counted
// last position would change every gradient. Checked against Transformers' ForCausalLMLoss written out in double
// (position t predicts labels[t + 1]; the last position and -100 labels are not counted), with the backward compared to
// the finite differences of scale * loss_sum. Tolerances: loss 1e-6 relative (double log-sum-exp over fp32 logits);
// probs 1e-6 (one fp32 rounding); gradient 1e-4 (fp32 analytic vs ~1e-9-accurate differences).
#include <gtest/gtest.h>

#include <cmath>

#include "op_test_util.h"
#include "ops/cpu/cross_entropy.h"

namespace moetune::test {
namespace {

constexpr int kBatch = 2, kSeq = 5, kVocab = 7;
// Row 0: label[0] is never a target; -100 at t = 2 drops position 1. Row 1: -100 at the end drops position 3.
const std::vector<int32_t> kLabels = {-100, 3, -100, 6, 0, 2, 5, 5, 1, -100};

struct Loss {
  double sum = 0.0;
  int counted = 0;
};

Loss reference_loss(const Doubles& logits) {
  Loss loss;
  for (int b = 0; b < kBatch; ++b)
    for (int t = 0; t + 1 < kSeq; ++t) {
      const int target = kLabels[b * kSeq + t + 1];
      if (target == -100) continue;
      const double* l = &logits[(b * kSeq + t) * kVocab];
      double total = 0.0;
      for (int v = 0; v < kVocab; ++v) total += std::exp(l[v]);
      loss.sum -= std::log(std::exp(l[target]) / total);
      ++loss.counted;
    }
  return loss;
}

TEST(CpuOpsCrossEntropy, ForwardMatchesShiftedReference) {
  const Floats logits = random_floats(kBatch * kSeq * kVocab, 71, -3.0f, 3.0f);
  Floats probs(logits.size());
  const cpu::CrossEntropyResult got =
      cpu::cross_entropy_forward(probs.data(), logits.data(), kLabels.data(), kBatch, kSeq, kVocab);
  const Loss want = reference_loss(to_double(logits));
  EXPECT_EQ(got.counted, 6);
  EXPECT_EQ(got.counted, want.counted);
  EXPECT_NEAR(got.loss_sum, want.sum, 1e-6 * want.sum);

  Doubles want_probs(logits.size());
  for (int row = 0; row < kBatch * kSeq; ++row) {
    double total = 0.0;
    for (int v = 0; v < kVocab; ++v) total += std::exp(static_cast<double>(logits[row * kVocab + v]));
    for (int v = 0; v < kVocab; ++v)
      want_probs[row * kVocab + v] = std::exp(static_cast<double>(logits[row * kVocab + v])) / total;
  }
  EXPECT_LT(rel_error(probs, want_probs), 1e-6);  // every position, counted or not
}

TEST(CpuOpsCrossEntropy, LargeLogitsAreStable) {
  // Adding 1000 to every logit (exp overflows in fp32 and double) must not change the loss.
  Floats logits = random_floats(kBatch * kSeq * kVocab, 72, -3.0f, 3.0f);
  Floats probs(logits.size());
  const double base =
      cpu::cross_entropy_forward(probs.data(), logits.data(), kLabels.data(), kBatch, kSeq, kVocab).loss_sum;
  for (float& l : logits) l += 1000.0f;
  const double shifted =
      cpu::cross_entropy_forward(probs.data(), logits.data(), kLabels.data(), kBatch, kSeq, kVocab).loss_sum;
  EXPECT_NEAR(shifted, base, 1e-3);  // the shifted logits themselves are rounded to ~6e-5 each
}

TEST(CpuOpsCrossEntropy, BackwardMatchesFiniteDifferences) {
  const Floats logits = random_floats(kBatch * kSeq * kVocab, 73, -3.0f, 3.0f);
  const float scale = 0.2f;                                     // e.g. 1 / counted tokens
  Floats probs(logits.size()), d_logits(logits.size(), 99.0f);  // overwritten, zeros at uncounted positions
  cpu::cross_entropy_forward(probs.data(), logits.data(), kLabels.data(), kBatch, kSeq, kVocab);
  cpu::cross_entropy_backward(d_logits.data(), probs.data(), kLabels.data(), kBatch, kSeq, kVocab, scale);
  const Doubles want = finite_diff([&](const Doubles& l) { return scale * reference_loss(l).sum; }, to_double(logits));
  EXPECT_LT(rel_error(d_logits, want), 1e-4);
  for (int row : {1, 4, 8, 9})  // ignored (t = 1, 8) and last (t = 4, 9) positions: exactly zero
    for (int v = 0; v < kVocab; ++v) EXPECT_EQ(d_logits[row * kVocab + v], 0.0f) << "row " << row;
}

}  // namespace
}  // namespace moetune::test
