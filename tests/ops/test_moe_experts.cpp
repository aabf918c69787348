// Why: the grouped expert path permutes token rows into expert order and back; a misrouted row or a mis-weighted
// combine would still produce plausible numbers. So the index map is checked against its definition, and forward and
// backward against the plainest reference: for each token, for each of its k experts, weight * down(silu(gate x) *
// up x), in double, with finite differences for x, the routing weights and both expert weight tensors. Expert 2
// receives no token. Tolerances: forward 1e-5 (fp32 GEMMs of length <= 8, ~1e-7); gradients 1e-4 (fp32 analytic vs
// ~1e-9-accurate differences).
#include <gtest/gtest.h>

#include <cmath>

#include "op_test_util.h"
#include "ops/cpu/moe_experts.h"

namespace moetune::test {
namespace {

const cpu::MoeShape kShape{5, 6, 4, 3, 2};  // tokens, hidden, experts, intermediate, top_k
// Each token's two distinct experts; none picks expert 2.
const std::vector<int32_t> kTopIndex = {1, 0, 3, 1, 0, 3, 3, 0, 1, 3};

struct Weights {
  Doubles x, top_weight, gate_up, down;
};

// out (tokens, H) = sum_j top_weight[t, j] * W_down[e] (silu(W_gate[e] x_t) * W_up[e] x_t) with e = top_index[t, j].
Doubles reference_moe(const Weights& w) {
  const int H = kShape.hidden, I = kShape.intermediate;
  Doubles out(kShape.tokens * H, 0.0);
  for (int t = 0; t < kShape.tokens; ++t)
    for (int j = 0; j < kShape.top_k; ++j) {
      const int e = kTopIndex[t * kShape.top_k + j];
      const double* gate_up = &w.gate_up[e * 2 * I * H];  // rows 0..I-1 gate, I..2I-1 up
      Doubles act(I);
      for (int i = 0; i < I; ++i) {
        double g = 0.0, u = 0.0;
        for (int h = 0; h < H; ++h) {
          g += gate_up[i * H + h] * w.x[t * H + h];
          u += gate_up[(I + i) * H + h] * w.x[t * H + h];
        }
        act[i] = g / (1.0 + std::exp(-g)) * u;
      }
      for (int h = 0; h < H; ++h) {
        double y = 0.0;
        for (int i = 0; i < I; ++i) y += w.down[(e * H + h) * I + i] * act[i];
        out[t * H + h] += w.top_weight[t * kShape.top_k + j] * y;
      }
    }
  return out;
}

// Buffers for one forward/backward of the op.
struct MoeBuffers {
  std::vector<int32_t> offsets = std::vector<int32_t>(kShape.experts + 1),
                       row_token = std::vector<int32_t>(kShape.rows()), row_slot = std::vector<int32_t>(kShape.rows());
  cpu::MoeRouting routing{offsets.data(), row_token.data(), row_slot.data()};
  Floats gathered = Floats(kShape.rows() * kShape.hidden), gate_up = Floats(kShape.rows() * 2 * kShape.intermediate),
         act = Floats(kShape.rows() * kShape.intermediate), expert_out = Floats(kShape.rows() * kShape.hidden);
  cpu::MoeSaved saved{gathered.data(), gate_up.data(), act.data(), expert_out.data()};
  Floats d_rows = Floats(kShape.rows() * kShape.hidden), d_act = Floats(kShape.rows() * kShape.intermediate),
         d_gate_up = Floats(kShape.rows() * 2 * kShape.intermediate);
  cpu::MoeScratch scratch{d_rows.data(), d_act.data(), d_gate_up.data()};
};

TEST(CpuOpsMoeExperts, RoutingGroupsRowsByExpertInTokenOrder) {
  MoeBuffers b;
  cpu::moe_build_routing(b.routing, kTopIndex.data(), kShape);
  std::vector<int32_t> want_offsets = {0}, want_token, want_slot;
  for (int e = 0; e < kShape.experts; ++e) {
    for (int t = 0; t < kShape.tokens; ++t)
      for (int j = 0; j < kShape.top_k; ++j)
        if (kTopIndex[t * kShape.top_k + j] == e) {
          want_token.push_back(t);
          want_slot.push_back(j);
        }
    want_offsets.push_back(static_cast<int32_t>(want_token.size()));
  }
  EXPECT_EQ(b.offsets, want_offsets);
  EXPECT_EQ(b.offsets[2], b.offsets[3]);  // the unused expert owns no rows
  EXPECT_EQ(b.row_token, want_token);
  EXPECT_EQ(b.row_slot, want_slot);
}

TEST(CpuOpsMoeExperts, ForwardAndBackwardMatchPerTokenReference) {
  const int H = kShape.hidden, I = kShape.intermediate, E = kShape.experts;
  const Floats x = random_floats(kShape.tokens * H, 61), top_weight = random_floats(kShape.rows(), 62, 0.1f, 1.0f),
               w_gate_up = random_floats(E * 2 * I * H, 63), w_down = random_floats(E * H * I, 64),
               d_out = random_floats(kShape.tokens * H, 65);
  const Weights w{to_double(x), to_double(top_weight), to_double(w_gate_up), to_double(w_down)};

  MoeBuffers b;
  cpu::moe_build_routing(b.routing, kTopIndex.data(), kShape);
  Floats out(kShape.tokens * H, 99.0f);  // overwritten
  cpu::moe_experts_forward(out.data(), b.saved, x.data(), top_weight.data(), b.routing, w_gate_up.data(), w_down.data(),
                           kShape);
  EXPECT_LT(rel_error(out, reference_moe(w)), 1e-5);

  // d_x, d_w_gate_up, d_w_down accumulate onto what they held; d_top_weight is overwritten.
  const Floats x_before = random_floats(x.size(), 66), gate_up_before = random_floats(w_gate_up.size(), 67),
               down_before = random_floats(w_down.size(), 68);
  Floats d_x = x_before, d_gate_up = gate_up_before, d_down = down_before, d_top_weight(kShape.rows(), 99.0f);
  cpu::moe_experts_backward(d_x.data(), d_top_weight.data(), d_gate_up.data(), d_down.data(), b.scratch, d_out.data(),
                            b.saved, top_weight.data(), b.routing, w_gate_up.data(), w_down.data(), kShape);

  const Doubles r = to_double(d_out);
  auto grad_of = [&](Doubles Weights::*member) {
    return finite_diff(
        [&](const Doubles& v) {
          Weights moved = w;
          moved.*member = v;
          return dot(reference_moe(moved), r);
        },
        w.*member);
  };
  EXPECT_LT(rel_error(added(d_x, x_before), grad_of(&Weights::x)), 1e-4);
  EXPECT_LT(rel_error(d_top_weight, grad_of(&Weights::top_weight)), 1e-4);
  const Doubles want_gate_up = grad_of(&Weights::gate_up), want_down = grad_of(&Weights::down);
  EXPECT_LT(rel_error(added(d_gate_up, gate_up_before), want_gate_up), 1e-4);
  EXPECT_LT(rel_error(added(d_down, down_before), want_down), 1e-4);
  // The expert without tokens gets exactly nothing added (not merely something small).
  for (int i = 0; i < 2 * I * H; ++i) EXPECT_EQ(d_gate_up[2 * 2 * I * H + i], gate_up_before[2 * 2 * I * H + i]);
  for (int i = 0; i < H * I; ++i) EXPECT_EQ(d_down[2 * H * I + i], down_before[2 * H * I + i]);
}

}  // namespace
}  // namespace moetune::test
