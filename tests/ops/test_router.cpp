// Why: the router decides which experts see a token and with what weight, and its gradient is the only signal that
// trains the gate; a wrong renormalisation or a load-balancing gradient on the wrong rows would not crash anything.
// Checked against a naive double reference (softmax, top-k by value with ties to the lower index, optional
// renormalisation, Transformers' load_balancing_loss_func with a one-hot expert mask), and router_backward against the
// finite differences of L = sum(top_weight * R) + sum_r sum_e probs[r, e] * extra_e (+ c * aux for the balance term).
// Logits are spread on a 0.3-spaced grid so a 1e-5 step never changes the top-k choice. Tolerances: forward 1e-5 (fp32
// softmax, ~1e-7); gradients 1e-4 (fp32 analytic vs ~1e-9-accurate differences).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "op_test_util.h"
#include "ops/cpu/router.h"

namespace moetune::test {
namespace {

constexpr int kTokens = 5, kExperts = 6, kTopK = 2;

struct Routed {
  Doubles probs, top_weight;
  std::vector<int32_t> top_index;
};

Routed reference_router(const Doubles& logits, bool renormalize) {
  Routed out{Doubles(logits.size()), Doubles(kTokens * kTopK), std::vector<int32_t>(kTokens * kTopK)};
  for (int t = 0; t < kTokens; ++t) {
    double total = 0.0;
    for (int e = 0; e < kExperts; ++e) total += std::exp(logits[t * kExperts + e]);
    for (int e = 0; e < kExperts; ++e) out.probs[t * kExperts + e] = std::exp(logits[t * kExperts + e]) / total;
    std::vector<int> order(kExperts);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int a, int b) { return out.probs[t * kExperts + a] > out.probs[t * kExperts + b]; });
    double picked = 0.0;
    for (int j = 0; j < kTopK; ++j) picked += out.probs[t * kExperts + order[j]];
    for (int j = 0; j < kTopK; ++j) {
      out.top_index[t * kTopK + j] = order[j];
      out.top_weight[t * kTopK + j] = out.probs[t * kExperts + order[j]] / (renormalize ? picked : 1.0);
    }
  }
  return out;
}

// aux as Transformers' load_balancing_loss_func computes it over the concatenated layers: E * sum_e f_e * P_e with
// f_e = mean over rows of the one-hot top-k mask, P_e = mean over rows of probs.
double reference_aux(const std::vector<Routed>& layers) {
  Doubles f(kExperts, 0.0), p(kExperts, 0.0);
  const double rows = static_cast<double>(layers.size()) * kTokens;
  for (const Routed& layer : layers)
    for (int t = 0; t < kTokens; ++t) {
      for (int j = 0; j < kTopK; ++j) f[layer.top_index[t * kTopK + j]] += 1.0 / rows;
      for (int e = 0; e < kExperts; ++e) p[e] += layer.probs[t * kExperts + e] / rows;
    }
  return kExperts * dot(f, p);
}

// Logits with distinct values 0.3 apart, shuffled per token.
Floats spread_logits(uint32_t seed) {
  std::mt19937 gen(seed);
  Floats logits(kTokens * kExperts);
  for (int t = 0; t < kTokens; ++t) {
    std::vector<int> rank(kExperts);
    std::iota(rank.begin(), rank.end(), 0);
    std::shuffle(rank.begin(), rank.end(), gen);
    for (int e = 0; e < kExperts; ++e) logits[t * kExperts + e] = 0.3f * rank[e] - 0.7f;
  }
  return logits;
}

TEST(CpuOpsRouter, ForwardMatchesReference) {
  const Floats logits = spread_logits(51);
  for (bool renormalize : {false, true}) {
    SCOPED_TRACE(renormalize);
    const Routed ref = reference_router(to_double(logits), renormalize);
    Floats probs(logits.size()), top_weight(kTokens * kTopK);
    std::vector<int32_t> top_index(kTokens * kTopK);
    cpu::router_forward(probs.data(), top_index.data(), top_weight.data(), logits.data(), kTokens, kExperts, kTopK,
                        renormalize);
    EXPECT_LT(rel_error(probs, ref.probs), 1e-5);
    EXPECT_EQ(top_index, ref.top_index);
    EXPECT_LT(rel_error(top_weight, ref.top_weight), 1e-5);
  }
}

TEST(CpuOpsRouter, TiesPickTheLowerExpertIndex) {
  const Floats logits = {0.5f, 1.0f, 0.5f, 1.0f, 1.0f, 0.0f};  // one token: experts 1, 3, 4 tie for the top
  Floats probs(6), top_weight(2);
  std::vector<int32_t> top_index(2);
  cpu::router_forward(probs.data(), top_index.data(), top_weight.data(), logits.data(), 1, 6, 2, false);
  EXPECT_EQ(top_index, (std::vector<int32_t>{1, 3}));
}

TEST(CpuOpsRouter, BackwardMatchesFiniteDifferences) {
  const Floats logits = spread_logits(52), d_top_weight = random_floats(kTokens * kTopK, 53),
               extra = random_floats(kExperts, 54);
  for (bool renormalize : {false, true})
    for (bool with_extra : {false, true}) {
      SCOPED_TRACE(testing::Message() << "renormalize " << renormalize << ", d_probs_extra " << with_extra);
      const Doubles r = to_double(d_top_weight), ex = with_extra ? to_double(extra) : Doubles(kExperts, 0.0);
      const Doubles want = finite_diff(
          [&](const Doubles& l) {
            const Routed out = reference_router(l, renormalize);
            double sum = dot(out.top_weight, r);
            for (int t = 0; t < kTokens; ++t)
              for (int e = 0; e < kExperts; ++e) sum += out.probs[t * kExperts + e] * ex[e];
            return sum;
          },
          to_double(logits));
      Floats probs(logits.size()), top_weight(kTokens * kTopK), d_logits(logits.size(), 99.0f);  // d_logits overwritten
      std::vector<int32_t> top_index(kTokens * kTopK);
      cpu::router_forward(probs.data(), top_index.data(), top_weight.data(), logits.data(), kTokens, kExperts, kTopK,
                          renormalize);
      cpu::router_backward(d_logits.data(), d_top_weight.data(), with_extra ? extra.data() : nullptr, probs.data(),
                           top_index.data(), top_weight.data(), kTokens, kExperts, kTopK, renormalize);
      EXPECT_LT(rel_error(d_logits, want), 1e-4);
    }
}

TEST(CpuOpsRouter, BalanceLossAndGradientOverTwoLayers) {
  // Two sparse layers: the statistics of both are accumulated, aux is compared with the reference, and for each
  // layer router_backward with d_probs_extra = router_balance_grad(c) must give the gradient of
  // sum(top_weight * R) + c * aux.
  const std::vector<Floats> logits = {spread_logits(55), spread_logits(56)};
  const Floats d_top_weight = random_floats(kTokens * kTopK, 57);
  const double c = 0.37, rows = 2.0 * kTokens;
  Doubles pick_counts(kExperts, 0.0), prob_sums(kExperts, 0.0);
  std::vector<Floats> probs(2, Floats(kTokens * kExperts)), top_weight(2, Floats(kTokens * kTopK));
  std::vector<std::vector<int32_t>> top_index(2, std::vector<int32_t>(kTokens * kTopK));
  for (int l = 0; l < 2; ++l) {
    cpu::router_forward(probs[l].data(), top_index[l].data(), top_weight[l].data(), logits[l].data(), kTokens, kExperts,
                        kTopK, true);
    cpu::router_balance_accumulate(pick_counts.data(), prob_sums.data(), probs[l].data(), top_index[l].data(), kTokens,
                                   kExperts, kTopK);
  }
  const double aux = cpu::router_balance_loss(pick_counts.data(), prob_sums.data(), rows, kExperts);
  const std::vector<Routed> ref = {reference_router(to_double(logits[0]), true),
                                   reference_router(to_double(logits[1]), true)};
  EXPECT_NEAR(aux, reference_aux(ref), 1e-6 * reference_aux(ref));

  Floats extra(kExperts);
  cpu::router_balance_grad(extra.data(), pick_counts.data(), rows, kExperts, c);
  for (int l = 0; l < 2; ++l) {
    SCOPED_TRACE(l);
    const Doubles want = finite_diff(
        [&](const Doubles& x) {
          std::vector<Routed> layers = ref;
          layers[l] = reference_router(x, true);
          return dot(layers[l].top_weight, to_double(d_top_weight)) + c * reference_aux(layers);
        },
        to_double(logits[l]));
    Floats d_logits(kTokens * kExperts);
    cpu::router_backward(d_logits.data(), d_top_weight.data(), extra.data(), probs[l].data(), top_index[l].data(),
                         top_weight[l].data(), kTokens, kExperts, kTopK, true);
    EXPECT_LT(rel_error(d_logits, want), 1e-4);
  }
}

}  // namespace
}  // namespace moetune::test
