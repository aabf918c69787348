// Why: the routed experts of an MoE block, as grouped work: token rows are permuted into expert order by an index map
// (no padding), each expert runs its SwiGLU MLP over its contiguous rows, and the results are combined back into token
// order weighted by the routing weights. The GPU backend does the same with grouped GEMMs; this is its reference.
#pragma once

#include <cstdint>

namespace moetune::cpu {

struct MoeShape {
  int tokens, hidden, experts, intermediate, top_k;
  long rows() const { return static_cast<long>(tokens) * top_k; }
};

// The index map from routing: expert e owns permuted rows [expert_offsets[e], expert_offsets[e+1]); permuted row r
// holds token row_token[r], top-k slot row_slot[r]. Rows of one expert keep token order.
struct MoeRouting {
  int32_t* expert_offsets;  // (E + 1)
  int32_t* row_token;       // (tokens * k)
  int32_t* row_slot;        // (tokens * k)
};

void moe_build_routing(MoeRouting& routing, const int32_t* top_index, const MoeShape& s);

// Saved activations of the experts, in permuted row order.
struct MoeSaved {
  float* gathered;    // (rows, H) the input rows
  float* gate_up;     // (rows, 2I)
  float* act;         // (rows, I)
  float* expert_out;  // (rows, H) expert output before weighting
};

// out (tokens, H) = sum over the token's k experts of weight * expert(x); overwritten.
// w_gate_up (E, 2I, H), w_down (E, H, I), top_weight (tokens, k).
void moe_experts_forward(float* out, MoeSaved& saved, const float* x, const float* top_weight, const MoeRouting& routing,
                         const float* w_gate_up, const float* w_down, const MoeShape& s);

// Scratch for the backward pass, in permuted row order.
struct MoeScratch {
  float* d_rows;     // (rows, H)
  float* d_act;      // (rows, I)
  float* d_gate_up;  // (rows, 2I)
};

// d_x (tokens, H) accumulated; d_top_weight (tokens, k) overwritten; d_w_gate_up, d_w_down accumulated.
void moe_experts_backward(float* d_x, float* d_top_weight, float* d_w_gate_up, float* d_w_down, MoeScratch& scratch,
                          const float* d_out, const MoeSaved& saved, const float* top_weight, const MoeRouting& routing,
                          const float* w_gate_up, const float* w_down, const MoeShape& s);

}  // namespace moetune::cpu
