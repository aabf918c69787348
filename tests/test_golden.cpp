// Why: the CPU engine against Transformers 5.17 itself, per family: logits, losses, the gradient of every parameter,
// and the losses of AdamW steps with clipping, weight decay and a warm-up schedule. Tolerances (fp32 vs a float64
// reference): logits and losses 1e-5 relative, gradients 1e-4 relative norm error per tensor, step losses 1e-5.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "api/model.h"
#include "golden_fixture.h"
#include "model/hf_names.h"

namespace moetune::testing {
namespace {

constexpr double kLogitsTolerance = 1e-5;
constexpr double kLossTolerance = 1e-5;
constexpr double kGradTolerance = 1e-4;
constexpr double kStepLossTolerance = 1e-5;

class Golden : public ::testing::TestWithParam<std::string> {};

double relative(double actual, double expected) { return std::fabs(actual - expected) / std::fmax(std::fabs(expected), 1e-30); }

TEST_P(Golden, ForwardLossesAndGradientsMatchTransformers) {
  const GoldenFixture fixture = GoldenFixture::open(GetParam());
  Model model = Model::from_pretrained(fixture.folder);
  const Batch batch = fixture.batch("input_ids", "labels");
  Trainer trainer(model, fixture.train_options(), batch.batch_size, batch.seq_len);
  const LossParts parts = trainer.compute_gradients(batch);

  const double ce = parts.ce_sum / static_cast<double>(parts.counted);
  const double loss = ce + model.config().router_aux_loss_coef * parts.aux;
  const double loss_error = relative(loss, fixture.floats("loss")[0]);
  const double ce_error = relative(ce, fixture.floats("ce_loss")[0]);
  const double aux_error = relative(parts.aux, fixture.floats("aux_loss")[0]);
  EXPECT_LE(loss_error, kLossTolerance);
  EXPECT_LE(ce_error, kLossTolerance);
  EXPECT_LE(aux_error, kLossTolerance);

  // Recompute the logits of the same batch (compute_gradients ran the forward already; evaluate repeats it).
  trainer.evaluate(batch);
  const std::vector<float> logits = fixture.floats("logits");
  CpuEngine engine(model.config(), batch.batch_size, batch.seq_len);
  engine.forward(model.weights(), batch.input_ids.data(), batch.labels.data());
  const double logits_error = max_error_relative(engine.logits(), logits.data(), logits.size());
  EXPECT_LE(logits_error, kLogitsTolerance);

  double worst_grad = 0.0;
  std::string worst_name;
  size_t compared = 0;
  for (const HfTensor& tensor : hf_tensors(model.config(), model.layout(), ExpertLayout::Fused)) {
    const std::vector<float> expected = fixture.floats("grad." + tensor.name);
    ASSERT_EQ(expected.size(), tensor.numel) << tensor.name;
    const double error = norm_error_relative(trainer.grads() + tensor.offset, expected.data(), tensor.numel);
    EXPECT_LE(error, kGradTolerance) << "gradient of " << tensor.name;
    if (error >= worst_grad) worst_grad = error, worst_name = tensor.name;
    ++compared;
  }
  size_t fixture_grads = 0;
  for (const TensorEntry& entry : fixture.expected.tensors()) fixture_grads += entry.name.rfind("grad.", 0) == 0;
  EXPECT_EQ(compared, fixture_grads) << "every parameter gradient in the fixture must be compared";
  std::printf("[golden %s] loss %.2e ce %.2e aux %.2e logits %.2e | worst grad %.2e (%s) over %zu tensors\n",
              GetParam().c_str(), loss_error, ce_error, aux_error, logits_error, worst_grad, worst_name.c_str(), compared);
}

TEST_P(Golden, AdamWStepLossesMatchTransformers) {
  const GoldenFixture fixture = GoldenFixture::open(GetParam());
  Model model = Model::from_pretrained(fixture.folder);
  const std::vector<float> losses = fixture.floats("step_losses");
  const std::vector<float> norms = fixture.floats("step_grad_norms");
  const std::vector<float> lrs = fixture.floats("step_lrs");
  const Batch first = fixture.batch("train_input_ids", "train_labels", 0);
  Trainer trainer(model, fixture.train_options(), first.batch_size, first.seq_len);
  double worst = 0.0;
  for (size_t s = 0; s < losses.size(); ++s) {
    const StepStats stats = trainer.step({fixture.batch("train_input_ids", "train_labels", static_cast<int>(s))});
    const double error = relative(stats.loss, losses[s]);
    worst = std::fmax(worst, error);
    EXPECT_LE(error, kStepLossTolerance) << "step " << s;
    EXPECT_LE(relative(stats.grad_norm, norms[s]), 1e-4) << "grad norm, step " << s;
    EXPECT_NEAR(stats.lr, lrs[s], 1e-9) << "learning rate, step " << s;
  }
  std::printf("[golden %s] %zu AdamW steps, worst step-loss error %.2e\n", GetParam().c_str(), losses.size(), worst);
}

TEST_P(Golden, FusedExpertLayoutLoadsTheSameWeights) {
  const GoldenFixture fixture = GoldenFixture::open(GetParam());
  if (!std::filesystem::exists(fixture.folder + "/fused")) GTEST_SKIP() << "no fused checkpoint for this family";
  const Model per_expert = Model::from_pretrained(fixture.folder);
  const Model fused = Model::from_pretrained(fixture.folder + "/fused");
  ASSERT_EQ(per_expert.buffer_size(), fused.buffer_size());
  for (size_t i = 0; i < per_expert.buffer_size(); ++i) ASSERT_EQ(per_expert.params()[i], fused.params()[i]) << i;
}

// The comparison must be able to fail: a weight moved by 1e-3 of its scale shows up as a gradient mismatch.
TEST_P(Golden, ComparisonDetectsASmallPerturbation) {
  const GoldenFixture fixture = GoldenFixture::open(GetParam());
  Model model = Model::from_pretrained(fixture.folder);
  const ParamInfo& router = *model.layout().find(model.config().layer_is_sparse[0] ? "model.layers.0.mlp.gate.weight"
                                                                                    : "model.layers.1.mlp.gate.weight");
  for (size_t i = 0; i < router.numel; ++i) model.params()[router.offset + i] *= 1.001f;
  const Batch batch = fixture.batch("input_ids", "labels");
  Trainer trainer(model, fixture.train_options(), batch.batch_size, batch.seq_len);
  trainer.compute_gradients(batch);
  double worst = 0.0;
  for (const HfTensor& tensor : hf_tensors(model.config(), model.layout(), ExpertLayout::Fused)) {
    const std::vector<float> expected = fixture.floats("grad." + tensor.name);
    worst = std::fmax(worst, norm_error_relative(trainer.grads() + tensor.offset, expected.data(), tensor.numel));
  }
  EXPECT_GT(worst, kGradTolerance);
}

INSTANTIATE_TEST_SUITE_P(Families, Golden, ::testing::Values("qwen3_moe", "mixtral", "olmoe", "qwen2_moe"));

}  // namespace
}  // namespace moetune::testing
