// Why: see moe_experts.h. Counting sort for the index map; per-expert BLAS calls for the projections.
#include "ops/cpu/moe_experts.h"

#include <cstring>
#include <vector>

#include "ops/cpu/linear.h"
#include "ops/cpu/swiglu.h"

namespace moetune::cpu {

void moe_build_routing(MoeRouting& routing, const int32_t* top_index, const MoeShape& s) {
  std::vector<int32_t> fill(s.experts + 1, 0);
  for (long i = 0; i < s.rows(); ++i) ++fill[top_index[i] + 1];
  for (int e = 0; e < s.experts; ++e) fill[e + 1] += fill[e];
  std::memcpy(routing.expert_offsets, fill.data(), sizeof(int32_t) * (s.experts + 1));
  for (int t = 0; t < s.tokens; ++t) {
    for (int j = 0; j < s.top_k; ++j) {
      const int32_t row = fill[top_index[static_cast<long>(t) * s.top_k + j]]++;
      routing.row_token[row] = t;
      routing.row_slot[row] = j;
    }
  }
}

void moe_experts_forward(float* out, MoeSaved& saved, const float* x, const float* top_weight, const MoeRouting& routing,
                         const float* w_gate_up, const float* w_down, const MoeShape& s) {
  const long H = s.hidden, I = s.intermediate;
  for (long r = 0; r < s.rows(); ++r) std::memcpy(saved.gathered + r * H, x + routing.row_token[r] * H, sizeof(float) * H);
  std::memset(out, 0, sizeof(float) * s.tokens * H);
  for (int e = 0; e < s.experts; ++e) {
    const long begin = routing.expert_offsets[e], count = routing.expert_offsets[e + 1] - begin;
    if (count == 0) continue;
    linear_forward(saved.gate_up + begin * 2 * I, saved.gathered + begin * H, w_gate_up + e * 2 * I * H, nullptr,
                   static_cast<int>(count), static_cast<int>(H), static_cast<int>(2 * I));
    swiglu_forward(saved.act + begin * I, saved.gate_up + begin * 2 * I, static_cast<int>(count), static_cast<int>(I));
    linear_forward(saved.expert_out + begin * H, saved.act + begin * I, w_down + e * H * I, nullptr, static_cast<int>(count),
                   static_cast<int>(I), static_cast<int>(H));
    for (long r = begin; r < begin + count; ++r) {
      const long t = routing.row_token[r];
      const float weight = top_weight[t * s.top_k + routing.row_slot[r]];
      for (long h = 0; h < H; ++h) out[t * H + h] += weight * saved.expert_out[r * H + h];
    }
  }
}

void moe_experts_backward(float* d_x, float* d_top_weight, float* d_w_gate_up, float* d_w_down, MoeScratch& scratch,
                          const float* d_out, const MoeSaved& saved, const float* top_weight, const MoeRouting& routing,
                          const float* w_gate_up, const float* w_down, const MoeShape& s) {
  const long H = s.hidden, I = s.intermediate;
  for (long r = 0; r < s.rows(); ++r) {
    const long t = routing.row_token[r], slot = routing.row_slot[r];
    const float weight = top_weight[t * s.top_k + slot];
    double dot = 0.0;
    for (long h = 0; h < H; ++h) {
      scratch.d_rows[r * H + h] = weight * d_out[t * H + h];
      dot += static_cast<double>(d_out[t * H + h]) * saved.expert_out[r * H + h];
    }
    d_top_weight[t * s.top_k + slot] = static_cast<float>(dot);
  }
  for (int e = 0; e < s.experts; ++e) {
    const long begin = routing.expert_offsets[e], count = routing.expert_offsets[e + 1] - begin;
    if (count == 0) continue;
    linear_backward(scratch.d_act + begin * I, d_w_down + e * H * I, nullptr, scratch.d_rows + begin * H,
                    saved.act + begin * I, w_down + e * H * I, static_cast<int>(count), static_cast<int>(I),
                    static_cast<int>(H));
    swiglu_backward(scratch.d_gate_up + begin * 2 * I, scratch.d_act + begin * I, saved.gate_up + begin * 2 * I,
                    static_cast<int>(count), static_cast<int>(I));
    // d_rows is reused for the gradient of the gathered input rows.
    linear_backward(scratch.d_rows + begin * H, d_w_gate_up + e * 2 * I * H, nullptr, scratch.d_gate_up + begin * 2 * I,
                    saved.gathered + begin * H, w_gate_up + e * 2 * I * H, static_cast<int>(count), static_cast<int>(H),
                    static_cast<int>(2 * I));
  }
  for (long r = 0; r < s.rows(); ++r) {
    const long t = routing.row_token[r];
    for (long h = 0; h < H; ++h) d_x[t * H + h] += scratch.d_rows[r * H + h];
  }
}

}  // namespace moetune::cpu
