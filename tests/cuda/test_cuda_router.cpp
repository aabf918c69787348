// Why: the GPU router must pick the same experts as the CPU twin and give the same probabilities, weights, gradients
// and load-balancing statistics. Shapes cover E not a multiple of 32, E = 256 (8 experts per lane), k = 1..16, with and
// without renormalisation. Tolerances: fp32 math vs the twin's double sums, 1e-5 norm-wise. Expert choices are exact:
// the GPU's picks must be the top-k of its own probabilities (ties: lower index), and differ from the CPU's only where
// two CPU probabilities are within 1e-6 (a near-tie flipped by rounding); with exactly tied logits they are identical.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "cuda_test_util.h"
#include "ops/cpu/router.h"
#include "ops/cuda/router.h"

namespace moetune::testing {
namespace {

struct RouterCase {
  int tokens, experts, top_k;
  bool renormalize;
};

const RouterCase kCases[] = {{1000, 8, 2, true},   {777, 60, 4, false}, {1024, 64, 8, true}, {513, 128, 8, false},
                             {300, 256, 16, true}, {65, 128, 1, false}, {130, 8, 8, true}};

struct Routed {
  std::vector<float> probs;
  std::vector<int32_t> index;
  std::vector<float> weight;
};

Routed cpu_route(const std::vector<float>& logits, const RouterCase& c) {
  Routed out{std::vector<float>(logits.size()), std::vector<int32_t>(static_cast<size_t>(c.tokens) * c.top_k),
             std::vector<float>(static_cast<size_t>(c.tokens) * c.top_k)};
  cpu::router_forward(out.probs.data(), out.index.data(), out.weight.data(), logits.data(), c.tokens, c.experts,
                      c.top_k, c.renormalize);
  return out;
}

Routed gpu_route(const std::vector<float>& logits, const RouterCase& c) {
  cuda::DeviceBuffer<float> d_logits(logits), probs(logits.size());
  cuda::DeviceBuffer<int32_t> index(static_cast<size_t>(c.tokens) * c.top_k);
  cuda::DeviceBuffer<float> weight(static_cast<size_t>(c.tokens) * c.top_k);
  cuda::router_forward(probs.data(), index.data(), weight.data(), d_logits.data(), c.tokens, c.experts, c.top_k,
                       c.renormalize, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  return {probs.download(), index.download(), weight.download()};
}

// The top-k of one row of probabilities, ties to the lower index (the CPU twin's rule).
std::vector<int32_t> top_k_of(const float* p, int experts, int top_k) {
  std::vector<bool> taken(experts, false);
  std::vector<int32_t> picks;
  for (int j = 0; j < top_k; ++j) {
    int best = -1;
    for (int e = 0; e < experts; ++e)
      if (!taken[e] && (best < 0 || p[e] > p[best])) best = e;
    taken[best] = true;
    picks.push_back(best);
  }
  return picks;
}

TEST(CudaRouter, ForwardMatchesCpuTwin) {
  SKIP_WITHOUT_GPU();
  uint64_t seed = 100;
  for (const RouterCase& c : kCases) {
    SCOPED_TRACE(::testing::Message() << "N=" << c.tokens << " E=" << c.experts << " k=" << c.top_k
                                      << " renormalize=" << c.renormalize);
    const std::vector<float> logits = random_floats(static_cast<size_t>(c.tokens) * c.experts, ++seed, 2.0f);
    const Routed want = cpu_route(logits, c), got = gpu_route(logits, c);
    EXPECT_LT(relative_norm_error(got.probs, want.probs), 1e-5);
    EXPECT_LT(relative_norm_error(got.weight, want.weight), 1e-5);
    int wrong_picks = 0, flipped_near_ties = 0;
    for (int t = 0; t < c.tokens; ++t) {
      const std::vector<int32_t> own = top_k_of(&got.probs[static_cast<size_t>(t) * c.experts], c.experts, c.top_k);
      for (int j = 0; j < c.top_k; ++j) {
        const size_t at = static_cast<size_t>(t) * c.top_k + j;
        if (got.index[at] != own[j]) ++wrong_picks;
        if (!c.renormalize && got.weight[at] != got.probs[static_cast<size_t>(t) * c.experts + got.index[at]])
          ++wrong_picks;
        if (got.index[at] != want.index[at]) {
          const float* p = &want.probs[static_cast<size_t>(t) * c.experts];
          if (std::fabs(p[got.index[at]] - p[want.index[at]]) > 1e-6f) ++wrong_picks;
          ++flipped_near_ties;
        }
      }
    }
    EXPECT_EQ(wrong_picks, 0);
    EXPECT_LE(flipped_near_ties, c.tokens / 100);
  }
}

TEST(CudaRouter, TiesPickTheLowerExpertLikeTheCpuTwin) {
  SKIP_WITHOUT_GPU();
  // Logits from a handful of values: equal logits give bitwise equal probabilities on both sides, so every tie is
  // real and must go to the lower expert index. Token 0 has all logits equal: it must pick experts 0..k-1.
  for (const RouterCase& c :
       {RouterCase{257, 64, 8, true}, RouterCase{100, 200, 16, false}, RouterCase{33, 8, 3, true}}) {
    std::vector<float> logits(static_cast<size_t>(c.tokens) * c.experts);
    for (int t = 0; t < c.tokens; ++t)
      for (int e = 0; e < c.experts; ++e)
        logits[static_cast<size_t>(t) * c.experts + e] = t == 0 ? 0.5f : static_cast<float>((e * 7 + t) % 5);
    SCOPED_TRACE(::testing::Message() << "N=" << c.tokens << " E=" << c.experts << " k=" << c.top_k);
    const Routed want = cpu_route(logits, c), got = gpu_route(logits, c);
    EXPECT_TRUE(got.index == want.index);
    EXPECT_LT(relative_norm_error(got.weight, want.weight), 1e-5);
    for (int j = 0; j < c.top_k; ++j) EXPECT_EQ(got.index[j], j);
  }
}

TEST(CudaRouter, BackwardMatchesCpuTwin) {
  SKIP_WITHOUT_GPU();
  uint64_t seed = 200;
  for (const RouterCase& c : kCases) {
    for (const bool with_extra : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "N=" << c.tokens << " E=" << c.experts << " k=" << c.top_k
                                        << " renormalize=" << c.renormalize << " extra=" << with_extra);
      const size_t logits_size = static_cast<size_t>(c.tokens) * c.experts;
      const Routed routed = cpu_route(random_floats(logits_size, ++seed, 2.0f), c);
      const std::vector<float> d_weight = random_floats(routed.weight.size(), ++seed);
      const std::vector<float> extra = random_floats(c.experts, ++seed, 0.1f);
      std::vector<float> want(logits_size);
      cpu::router_backward(want.data(), d_weight.data(), with_extra ? extra.data() : nullptr, routed.probs.data(),
                           routed.index.data(), routed.weight.data(), c.tokens, c.experts, c.top_k, c.renormalize);

      cuda::DeviceBuffer<float> probs(routed.probs), weight(routed.weight), d_top_weight(d_weight), d_extra(extra);
      cuda::DeviceBuffer<int32_t> index(routed.index);
      cuda::DeviceBuffer<float> d_logits(std::vector<float>(logits_size, NAN));  // must be overwritten
      cuda::router_backward(d_logits.data(), d_top_weight.data(), with_extra ? d_extra.data() : nullptr, probs.data(),
                            index.data(), weight.data(), c.tokens, c.experts, c.top_k, c.renormalize, nullptr);
      EXPECT_LT(relative_norm_error(d_logits.download(), want), 1e-5);
    }
  }
}

TEST(CudaRouter, BalanceStatsMatchCpuTwinAndAreDeterministic) {
  SKIP_WITHOUT_GPU();
  uint64_t seed = 300;
  for (const RouterCase& c : kCases) {
    SCOPED_TRACE(::testing::Message() << "N=" << c.tokens << " E=" << c.experts << " k=" << c.top_k);
    // Two layers accumulate into the same statistics.
    const size_t logits_size = static_cast<size_t>(c.tokens) * c.experts;
    const Routed layer_a = cpu_route(random_floats(logits_size, ++seed, 2.0f), c);
    const Routed layer_b = cpu_route(random_floats(logits_size, ++seed, 2.0f), c);
    std::vector<double> counts(c.experts, 0.0), sums(c.experts, 0.0);
    for (const Routed* layer : {&layer_a, &layer_b})
      cpu::router_balance_accumulate(counts.data(), sums.data(), layer->probs.data(), layer->index.data(), c.tokens,
                                     c.experts, c.top_k);

    cuda::DeviceBuffer<float> probs_a(layer_a.probs), probs_b(layer_b.probs);
    cuda::DeviceBuffer<int32_t> index_a(layer_a.index), index_b(layer_b.index);
    cuda::DeviceBuffer<float> scratch(cuda::router_balance_scratch_floats(c.tokens, c.experts));
    std::vector<float> first_counts, first_sums;
    for (int run = 0; run < 2; ++run) {
      cuda::DeviceBuffer<float> pick_counts(c.experts), prob_sums(c.experts);
      pick_counts.zero();
      prob_sums.zero();
      cuda::router_balance_stats(pick_counts.data(), prob_sums.data(), probs_a.data(), index_a.data(), c.tokens,
                                 c.experts, c.top_k, scratch.data(), nullptr);
      cuda::router_balance_stats(pick_counts.data(), prob_sums.data(), probs_b.data(), index_b.data(), c.tokens,
                                 c.experts, c.top_k, scratch.data(), nullptr);
      const std::vector<float> got_counts = pick_counts.download(), got_sums = prob_sums.download();
      if (run == 0) {
        for (int e = 0; e < c.experts; ++e) EXPECT_EQ(got_counts[e], static_cast<float>(counts[e])) << "expert " << e;
        EXPECT_LT(relative_norm_error(got_sums, std::vector<float>(sums.begin(), sums.end())), 1e-5);
        first_counts = got_counts;
        first_sums = got_sums;
      } else {
        EXPECT_EQ(std::memcmp(got_counts.data(), first_counts.data(), sizeof(float) * c.experts), 0);
        EXPECT_EQ(std::memcmp(got_sums.data(), first_sums.data(), sizeof(float) * c.experts), 0);
      }
    }
  }
}

TEST(CudaRouter, BalanceLossAndGradMatchCpuTwin) {
  SKIP_WITHOUT_GPU();
  for (const int experts : {8, 60, 128, 256}) {
    SCOPED_TRACE(::testing::Message() << "E=" << experts);
    const double rows = 3.0 * 4096;
    const double scale = 0.01;
    std::vector<float> counts(experts), sums(experts);
    for (int e = 0; e < experts; ++e) {
      counts[e] = static_cast<float>((e * 37) % 101 + 1);
      sums[e] = static_cast<float>(e % 13) * 0.75f + 1.0f;
    }
    const std::vector<double> counts_d(counts.begin(), counts.end()), sums_d(sums.begin(), sums.end());
    const double want_aux = cpu::router_balance_loss(counts_d.data(), sums_d.data(), rows, experts);
    std::vector<float> want_grad(experts);
    cpu::router_balance_grad(want_grad.data(), counts_d.data(), rows, experts, scale);

    cuda::DeviceBuffer<float> pick_counts(counts), prob_sums(sums), aux(1), d_extra(experts);
    cuda::router_balance_loss_and_grad(aux.data(), d_extra.data(), pick_counts.data(), prob_sums.data(), rows, experts,
                                       scale, nullptr);
    EXPECT_NEAR(aux.download()[0], want_aux, 1e-6 * std::fabs(want_aux));
    EXPECT_LT(relative_norm_error(d_extra.download(), want_grad), 1e-6);
  }
}

TEST(CudaRouter, ForwardAndBackwardAreDeterministic) {
  SKIP_WITHOUT_GPU();
  const RouterCase c{4096, 128, 8, true};
  const size_t logits_size = static_cast<size_t>(c.tokens) * c.experts, picks = static_cast<size_t>(c.tokens) * c.top_k;
  cuda::DeviceBuffer<float> logits(random_floats(logits_size, 400, 2.0f)), d_top_weight(random_floats(picks, 401));
  cuda::DeviceBuffer<float> d_extra(random_floats(c.experts, 402, 0.1f));
  std::vector<float> first_probs, first_weight, first_grad;
  std::vector<int32_t> first_index;
  for (int run = 0; run < 2; ++run) {
    cuda::DeviceBuffer<float> probs(logits_size), weight(picks), d_logits(logits_size);
    cuda::DeviceBuffer<int32_t> index(picks);
    cuda::router_forward(probs.data(), index.data(), weight.data(), logits.data(), c.tokens, c.experts, c.top_k,
                         c.renormalize, nullptr);
    cuda::router_backward(d_logits.data(), d_top_weight.data(), d_extra.data(), probs.data(), index.data(),
                          weight.data(), c.tokens, c.experts, c.top_k, c.renormalize, nullptr);
    const std::vector<float> p = probs.download(), w = weight.download(), g = d_logits.download();
    const std::vector<int32_t> i = index.download();
    if (run == 0) {
      first_probs = p;
      first_weight = w;
      first_grad = g;
      first_index = i;
      continue;
    }
    EXPECT_EQ(std::memcmp(p.data(), first_probs.data(), sizeof(float) * p.size()), 0);
    EXPECT_EQ(std::memcmp(w.data(), first_weight.data(), sizeof(float) * w.size()), 0);
    EXPECT_EQ(std::memcmp(g.data(), first_grad.data(), sizeof(float) * g.size()), 0);
    EXPECT_TRUE(i == first_index);
  }
}

}  // namespace
}  // namespace moetune::testing
