// Why: the activation and workspace layout of GpuEngine, shared by gpu_engine.cpp (carving, model-level passes) and
// gpu_layers.cpp (per-layer passes). Not part of the public API.
#pragma once

#include <vector>

#include "gpu/gpu_engine.h"

namespace moetune::cuda {

struct GpuEngine::Layer {
  bf16* input;          // (N, H) residual stream entering the layer
  bf16* norm1;          // (N, H)
  float* rstd1;         // (N)
  bf16* q_proj;         // (N, Q)
  bf16* k_proj;         // (N, KV)
  bf16* q;              // (N, Q) normed + rotated
  bf16* k;              // (N, KV)
  bf16* v;              // (N, KV)
  float* q_rstd;        // (N * heads) | (N)
  float* k_rstd;        // (N * kv_heads) | (N)
  bf16* attn_out;       // (N, Q)
  float* stats;         // (B, heads, T)
  bf16* mid;            // (N, H)
  bf16* norm2;          // (N, H)
  float* rstd2;         // (N)
  // Sparse
  float* router_logits;     // (N, E)
  float* probs;             // (N, E)
  int32_t* top_index;       // (N, k)
  float* top_weight;        // (N, k)
  int32_t* offsets;         // (E + 1)
  int32_t* row_token;       // (N k)
  int32_t* row_slot;        // (N k)
  int32_t* token_slot_row;  // (N k)
  bf16* gathered;           // (N k, H)
  bf16* gate_up;            // (N k, 2I) | dense (N, 2Id)
  bf16* act;                // (N k, I) | dense (N, Id)
  bf16* expert_out;         // (N k, H)
  std::vector<int32_t> host_offsets;  // (E + 1), read once per forward
};

struct GpuEngine::Buffers {
  int32_t* ids;            // (N)
  int32_t* targets;        // (N) shifted labels, -100 ignored
  int32_t* positions;      // (N)
  bf16* final_input;       // (N, H)
  bf16* final_norm;        // (N, H)
  float* final_rstd;       // (N)
  bf16* logits_chunk;      // (kLossChunkRows, V)
  float* row_loss;         // (N)
  float* loss_sum;         // (1)
  float* pick_counts;      // (E)
  float* prob_sums;        // (E)
  float* aux;              // (1)
  float* d_probs_extra;    // (E)
  float* balance_scratch;
  void* routing_scratch;
  int32_t* host_offsets_pinned;  // (E + 1) pinned
  float* host_scalars_pinned;    // (2) pinned: loss_sum, aux
  // Workspace
  bf16* mlp_out;           // (N, H)
  bf16* d_stream;          // (N, H)
  bf16* d_mid;             // (N, H)
  bf16* d_norm;            // (N, H)
  bf16* d_tmp;             // (N, H)
  bf16* d_final_norm;      // (N, H)
  bf16* d_attn;            // (N, Q)
  bf16* d_q;               // (N, Q)
  bf16* d_k;               // (N, KV)
  bf16* d_v;               // (N, KV)
  bf16* d_rows;            // (N k, H)
  bf16* d_act;             // (max(N k I, N Id))
  bf16* d_gate_up;         // (max(N k 2I, N 2Id))
  float* d_top_weight;     // (N, k)
  float* d_router_logits;  // (N, E)
  bf16* d_router_logits16; // (N, E)
  float* norm_grad;        // (max(H, Q)) fp32 norm-weight gradient before it is added to the bf16 arena
  float* norm_scratch;     // rmsnorm_backward scratch
  void* embed_scratch;     // embedding_backward's sort scratch
};

}  // namespace moetune::cuda
