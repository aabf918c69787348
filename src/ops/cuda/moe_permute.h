// Why: the token <-> expert-row plumbing of the routed experts on the GPU, the twin of the index map, gather and
// weighted combine inside ops/cpu/moe_experts.cpp. Token rows are permuted into expert order without padding and
// without a host synchronisation (the grouped GEMMs read expert_offsets on the device), in EXACTLY the CPU twin's
// order: expert e owns permuted rows [expert_offsets[e], expert_offsets[e+1]), its rows in increasing token order,
// then slot. Every sum is fp32 in a fixed order and no op uses float atomics, so two runs are bitwise identical.
//
// Shapes: N tokens, k = top_k (1..16) picks per token, rows = N * k, H = hidden, E experts (1..256).
// The maps: permuted row r holds token row_token[r], slot row_slot[r]; token_slot_row[t * k + j] is the permuted
// row of (token t, slot j), the inverse map, so combines are per-token sums without atomics.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ops/cuda/cuda_check.h"

namespace moetune::cuda {

constexpr int kMoeMaxExperts = 256;
constexpr int kMoeMaxTopK = 16;

// Bytes of scratch moe_build_routing needs. Currently 0 (offsets are built in place, scratch may be null); callers
// still allocate what this returns, so a faster implementation can use scratch without changing call sites.
size_t moe_routing_scratch_bytes(int tokens, int experts, int top_k);

// expert_offsets (E + 1), row_token (rows), row_slot (rows), token_slot_row (rows), all overwritten, from top_index
// (N, k) with values in [0, E). Identical to cpu::moe_build_routing (plus the inverse map).
void moe_build_routing(int32_t* expert_offsets, int32_t* row_token, int32_t* row_slot, int32_t* token_slot_row,
                       const int32_t* top_index, int tokens, int experts, int top_k, void* scratch,
                       cudaStream_t stream);

// rows_out (rows, H) overwritten: rows_out[r] = x[row_token[r]], x (N, H). 16-byte copies when H % 8 == 0.
void moe_gather(bf16* rows_out, const bf16* x, const int32_t* row_token, long rows, int hidden, cudaStream_t stream);

// out (N, H) overwritten: out[t] = sum_j top_weight[t, j] * expert_out[token_slot_row[t, j]], in fp32 by slot
// order, then rounded to bf16. expert_out (rows, H), top_weight (N, k). (The CPU twin sums in expert order: the two
// agree within bf16 rounding.)
void moe_combine_forward(bf16* out, const bf16* expert_out, const float* top_weight, const int32_t* token_slot_row,
                         int tokens, int hidden, int top_k, cudaStream_t stream);

// Gradients of moe_combine_forward, per permuted row r of token t = row_token[r], slot j = row_slot[r]:
// d_expert_out (rows, H) overwritten: d_expert_out[r] = top_weight[t, j] * d_out[t];
// d_top_weight (N, k) overwritten: d_top_weight[t, j] = dot(d_out[t], expert_out[r]) in fp32.
// d_out (N, H), expert_out (rows, H), top_weight (N, k).
void moe_combine_backward(bf16* d_expert_out, float* d_top_weight, const bf16* d_out, const bf16* expert_out,
                          const float* top_weight, const int32_t* row_token, const int32_t* row_slot, long rows,
                          int hidden, int top_k, cudaStream_t stream);

// Gradient of moe_gather: d_x (N, H) overwritten: d_x[t] = sum_j d_rows[token_slot_row[t, j]] in fp32 by slot order.
// d_rows (rows, H). (The CPU twin adds into d_x; here the caller adds the residual branch's gradient itself.)
void moe_scatter_add_backward(bf16* d_x, const bf16* d_rows, const int32_t* token_slot_row, int tokens, int hidden,
                              int top_k, cudaStream_t stream);

}  // namespace moetune::cuda
