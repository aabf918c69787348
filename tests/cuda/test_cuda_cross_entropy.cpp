// Why: the loss drives every step, and its GPU form differs from the CPU twin in layout (shifted targets, gradient
// written in place over the logits, per-row losses), so the equivalence is built explicitly: logits (B, T, V) with
// unshifted labels go through the CPU twin, and the same logits with targets[b*T + t] = labels[b][t+1] (-100 for the
// last position) through the GPU. Vocabularies 7, 128 and 151936 (Qwen's), ignored labels, logits spread wide enough
// to test the stable softmax. Per-row losses (fp32) to 1e-5 relative against the twin applied to that row alone; their
// sum to 1e-5; d_logits (fp32 math, one bf16 rounding) to kBf16RoundTrip; two runs bit for bit. Each case runs with the
// logits 16-byte aligned (the 8-wide path when V allows) and one element off (the scalar path). -inf logits count for
// nothing and a NaN one makes the row's loss NaN, on both paths.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <utility>

#include "cuda_test_util.h"
#include "ops/cpu/cross_entropy.h"
#include "ops/cuda/cross_entropy.h"

namespace moetune::testing {
namespace {

struct Shape {
  int batch, seq_len, vocab;
  float logit_scale;
};

std::vector<int32_t> random_labels(int count, int vocab, uint64_t seed) {
  std::mt19937_64 generator(seed);
  std::uniform_int_distribution<int32_t> label(0, vocab - 1);
  std::vector<int32_t> labels(count);
  for (int i = 0; i < count; ++i) labels[i] = i % 4 == 2 ? -100 : label(generator);  // every 4th ignored
  return labels;
}

// targets[b*T + t] = labels[b][t + 1], -100 for the last position of a row.
std::vector<int32_t> shifted(const std::vector<int32_t>& labels, int batch, int seq_len) {
  std::vector<int32_t> targets(labels.size());
  for (int b = 0; b < batch; ++b)
    for (int t = 0; t < seq_len; ++t)
      targets[b * seq_len + t] = t + 1 < seq_len ? labels[b * seq_len + t + 1] : -100;
  return targets;
}

// The CPU twin on one row alone: logits (1, 2, V) = [row, row], labels [any, target] make position 0 count target.
double cpu_row_loss(const float* row, int32_t target, int vocab) {
  std::vector<float> logits(row, row + vocab), probs(2 * size_t(vocab));
  logits.insert(logits.end(), row, row + vocab);
  const int32_t labels[2] = {0, target};
  return cpu::cross_entropy_forward(probs.data(), logits.data(), labels, 1, 2, vocab).loss_sum;
}

TEST(CudaCrossEntropy, MatchesCpu) {
  SKIP_WITHOUT_GPU();
  const Shape shapes[] = {{2, 5, 7, 1.0f}, {3, 9, 128, 4.0f}, {2, 4, 151936, 2.0f}, {1, 3, 1000, 30.0f}};
  std::vector<std::pair<Shape, int>> cases;  // and the elements before the logits in the device buffer
  for (const Shape& shape : shapes)
    for (const int offset : {0, 1}) cases.emplace_back(shape, offset);
  for (const auto& [s, offset] : cases) {
    SCOPED_TRACE(::testing::Message() << "B " << s.batch << ", T " << s.seq_len << ", V " << s.vocab << ", offset "
                                      << offset);
    const int rows = s.batch * s.seq_len;
    const size_t n = size_t(rows) * s.vocab;
    const std::vector<float> logits = round_to_bf16(random_floats(n, 1, s.logit_scale));
    const std::vector<int32_t> labels = random_labels(rows, s.vocab, 2), targets = shifted(labels, s.batch, s.seq_len);

    std::vector<float> probs(n), d_logits(n);
    const cpu::CrossEntropyResult expected =
        cpu::cross_entropy_forward(probs.data(), logits.data(), labels.data(), s.batch, s.seq_len, s.vocab);
    ASSERT_GT(expected.counted, 0);
    const float grad_scale = 1.0f / static_cast<float>(expected.counted);
    cpu::cross_entropy_backward(d_logits.data(), probs.data(), labels.data(), s.batch, s.seq_len, s.vocab, grad_scale);

    std::vector<float> padded(offset, 0.0f);
    padded.insert(padded.end(), logits.begin(), logits.end());
    auto logits_d = to_device_bf16(padded);
    cuda::DeviceBuffer<int32_t> targets_d(targets);
    cuda::DeviceBuffer<float> row_loss_d(rows), sum_d(1);
    cuda::cross_entropy_forward_backward(logits_d.data() + offset, row_loss_d.data(), targets_d.data(), rows, s.vocab,
                                         grad_scale, nullptr);
    cuda::sum_floats(row_loss_d.data(), rows, sum_d.data(), nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<float> row_loss = row_loss_d.download();
    const std::vector<float> all = to_host_f32(logits_d), got(all.begin() + offset, all.end());

    EXPECT_NEAR(sum_d.download()[0], expected.loss_sum, 1e-5 * expected.loss_sum);
    for (int r = 0; r < rows; ++r) {
      if (targets[r] == -100) {
        EXPECT_EQ(row_loss[r], 0.0f) << "ignored row " << r;
        for (int v = 0; v < s.vocab; ++v) ASSERT_EQ(got[size_t(r) * s.vocab + v], 0.0f) << "ignored row " << r;
      } else {
        const double want = cpu_row_loss(logits.data() + size_t(r) * s.vocab, targets[r], s.vocab);
        EXPECT_NEAR(row_loss[r], want, 1e-5 * std::abs(want) + 1e-5) << "row " << r;
      }
    }
    EXPECT_LT(relative_norm_error(got, d_logits), kBf16RoundTrip);
  }
}

TEST(CudaCrossEntropy, IsDeterministic) {
  SKIP_WITHOUT_GPU();
  const int rows = 64, vocab = 151936;
  const std::vector<float> logits = round_to_bf16(random_floats(size_t(rows) * vocab, 3, 2.0f));
  cuda::DeviceBuffer<int32_t> targets_d(random_labels(rows, vocab, 4));
  std::vector<std::vector<cuda::bf16>> grads;
  std::vector<float> sums;
  for (int run = 0; run < 2; ++run) {
    auto logits_d = to_device_bf16(logits);
    cuda::DeviceBuffer<float> row_loss_d(rows), sum_d(1);
    cuda::cross_entropy_forward_backward(logits_d.data(), row_loss_d.data(), targets_d.data(), rows, vocab, 1.0f / 48,
                                         nullptr);
    cuda::sum_floats(row_loss_d.data(), rows, sum_d.data(), nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    grads.push_back(logits_d.download());
    sums.push_back(sum_d.download()[0]);
  }
  EXPECT_EQ(std::memcmp(&sums[0], &sums[1], sizeof(float)), 0);
  EXPECT_EQ(std::memcmp(grads[0].data(), grads[1].data(), grads[0].size() * sizeof(cuda::bf16)), 0);
}

TEST(CudaCrossEntropy, MinusInfinityCountsForNothingAndNanPoisonsTheRow) {
  SKIP_WITHOUT_GPU();
  const int vocab = 128;
  // Row 0: finite logits but for a whole 8-aligned block and a few scattered ones at -inf. Row 1: one NaN logit.
  std::vector<float> logits = round_to_bf16(random_floats(2 * size_t(vocab), 5, 2.0f));
  for (int v = 16; v < 24; ++v) logits[v] = -INFINITY;
  for (int v : {3, 50, 101}) logits[v] = -INFINITY;
  logits[vocab + 77] = NAN;
  const std::vector<int32_t> targets = {9, 9};
  const double want = cpu_row_loss(logits.data(), targets[0], vocab);
  for (const int offset : {0, 1}) {
    SCOPED_TRACE(::testing::Message() << "offset " << offset);
    std::vector<float> padded(offset, 0.0f);
    padded.insert(padded.end(), logits.begin(), logits.end());
    auto logits_d = to_device_bf16(padded);
    cuda::DeviceBuffer<int32_t> targets_d(targets);
    cuda::DeviceBuffer<float> row_loss_d(2);
    cuda::cross_entropy_forward_backward(logits_d.data() + offset, row_loss_d.data(), targets_d.data(), 2, vocab, 1.0f,
                                         nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<float> row_loss = row_loss_d.download();
    EXPECT_NEAR(row_loss[0], want, 1e-5 * std::abs(want));
    EXPECT_TRUE(std::isnan(row_loss[1])) << row_loss[1];
  }
}

}  // namespace
}  // namespace moetune::testing
