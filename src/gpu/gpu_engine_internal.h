// Why: the activation and workspace layout of GpuEngine, shared by gpu_engine.cpp (carving, model-level passes) and
// gpu_layers.cpp (per-layer passes). Not part of the public API.
#pragma once

#include <vector>

#include "gpu/expert_exchange.h"
#include "gpu/gpu_engine.h"

namespace moetune::cuda {

// Layer `layer`'s attention shape for a batch (batch, seq_len): heads, head_dim, its sliding window, 1/sqrt(head_dim).
cpu::AttentionShape attention_shape(const ModelConfig& c, int batch, int seq_len, int layer);

// Whether a sparse layer keeps none of its experts' row buffers (Layer::expert_in): without expert parallelism and on
// moetune's own grouped GEMMs. The engine then keeps only gate_up of the expert side. cuBLAS's grouped path keeps the
// rows, the outputs and the activation (its data and weight gradients are one call, which needs the activation before
// the routing weights' gradient exists); with recompute, in the one shared set.
inline bool expert_rows_transient(bool expert_parallel, GroupedGemmBackend backend) {
  return !expert_parallel && backend != GroupedGemmBackend::Cublas;
}

// One layer's activations. Without recompute every layer owns all of them; with recompute a layer owns only `input`
// and every other pointer is the same for all layers (one shared set, carved with the fields of both layer kinds).
// Either way, transient expert rows point into the workspace (below). A pointer a layer's kind or the config does not
// use is null.
struct GpuEngine::Layer {
  bf16* input;          // (N, H) residual stream entering the layer
  bf16* norm1;          // (N, H)
  float* rstd1;         // (N)
  bf16* q_proj;         // (N, Q)
  bf16* k_proj;         // (N, KV)
  bf16* q;              // (N, Q) normed + rotated
  bf16* k;              // (N, KV)
  bf16* v;              // (N, KV)
  bf16* q_unclipped;    // (N, Q) clip_qkv only: q before the clamp (= q_proj without q/k norm)
  bf16* k_unclipped;    // (N, KV) likewise
  bf16* v_unclipped;    // (N, KV) clip_qkv only: the v projection before the clamp
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
  bf16* gathered;           // (N k, H) rows in global expert order (transient: Buffers::expert_rows)
  // The expert side. R = rows this rank's experts take: N k without expert parallelism (then expert_in = gathered and
  // expert_rows_out = expert_out), else the exchange's capacity (recv_rows of the step's plan are used).
  // When the expert rows are transient (expert_rows_transient), these four are the workspace's, the same for every
  // layer: the forward gathers the rows into Buffers::expert_rows, puts the activation in Buffers::d_act and the
  // outputs in Buffers::d_rows, and combines them. The backward gathers the unweighted output gradient, takes the
  // routing weights' gradient from the down projection's data gradient (swiglu_backward_routed: dot(d_act, act) =
  // dot(d_out, expert output)), which also recomputes the weighted activation for the down weight gradient into
  // Buffers::expert_rows, and gathers the rows there again for the gate_up one. That drops 2 (N k, H) + (N k, I) per
  // layer for one gather per layer in the backward, and with recompute the re-run forward stops after gate_up.
  bf16* expert_in;          // (R, H) local-expert-major rows
  bf16* gate_up;            // (R, 2I) | dense (N, 2Id); the shared set: the larger
  bf16* act;                // (R, I) unless transient | dense (N, Id); the shared set: the larger
  bf16* expert_rows_out;    // (R, H) expert outputs, local-expert-major
  bf16* expert_out;         // (N k, H) expert outputs of this rank's rows, global expert order
  bf16* shared_gate_up;     // (N, 2Is) Qwen2-MoE shared expert
  bf16* shared_act;         // (N, Is)
  bf16* shared_out;         // (N, H) before its sigmoid gate
  float* shared_gate_logit; // (N)
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
  bf16* d_rows;            // (N k, H); transient expert rows: the experts' outputs in the forward
  bf16* expert_rows;       // (N k, max(H, I)) transient expert rows with a sparse layer (Layer::expert_in), else null
  bf16* d_expert_rows;     // (R, H) expert parallelism: d(expert output), then d(expert input), expert side
  bf16* exchange_staging;  // (ExpertExchange::staging_elements()) expert parallelism only
  bf16* d_act;             // (max(R I, N Id, N Is)); transient expert rows: the experts' activation in the forward
  bf16* d_gate_up;         // (max(R 2I, N 2Id, N 2Is))
  bf16* d_shared_gate_logit;  // (N) shared expert only
  float* bias_scratch;     // bias_grad scratch, attention biases only
  float* d_top_weight;     // (N, k)
  float* d_router_logits;  // (N, E)
  bf16* d_router_logits16; // (N, E)
  float* norm_grad;        // (max(H, Q)) fp32 norm-weight gradient before it is added to the bf16 arena
  float* norm_scratch;     // rmsnorm_backward scratch
  void* embed_scratch;     // embedding_backward's sort scratch
};

}  // namespace moetune::cuda
