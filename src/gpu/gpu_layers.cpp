// Why: the MLP half of a decoder layer on the GPU, forward and backward — the twin of model/cpu_mlp.cpp (the attention
// half is gpu_attention_layer.cpp). Sparse layers: router, routed SwiGLU experts on grouped GEMMs between index-map
// permutes, and (Qwen2-MoE) a shared SwiGLU expert on dense GEMMs scaled by sigmoid(shared_expert_gate(x)). Dense
// layers: one SwiGLU MLP. With expert parallelism the backward may return d(expert input) to the source ranks on a
// second stream while the experts' gate_up weight gradient runs, since neither reads what the other writes (see
// mlp_backward); everything else is stream-ordered on the engine's stream.
#include "gpu/elementwise.h"
#include "gpu/gpu_engine_internal.h"
#include "ops/cuda/grouped_gemm.h"
#include "ops/cuda/moe_permute.h"
#include "ops/cuda/rmsnorm.h"
#include "ops/cuda/router.h"
#include "ops/cuda/sigmoid_gate.h"
#include "ops/cuda/swiglu.h"

namespace moetune::cuda {

// The expert side of MoE layer l: how many rows this rank's experts take and their offsets. Without expert
// parallelism, every routed row and all E experts; with it, the exchange's plan for the layer (planned in the forward
// pass: a count exchange over the EP group). The cuBLAS grouped GEMM also needs the offsets on the host.
GpuEngine::ExpertRows GpuEngine::expert_rows(int l, bool forward) {
  const ModelConfig& c = config_;
  Layer& a = layers_[l];
  Buffers& b = *b_;
  ExpertRows x;
  x.own = grouped_gemm_ != GroupedGemmBackend::Cublas;
  if (exchange_) {
    if (forward) exchange_->plan(l, a.offsets, stream_);
    x.experts = exchange_->local_experts();
    x.rows = exchange_->recv_rows(l);
    x.offsets = exchange_->local_offsets(l);
    if (!x.own) a.host_offsets = exchange_->layout(l).local_offsets;
    return x;
  }
  x.experts = c.num_experts;
  x.rows = static_cast<long>(tokens_) * c.top_k;
  x.offsets = a.offsets;
  if (!x.own && forward) {  // cuBLAS's grouped GEMM takes per-expert sizes on the host
    CUDA_CHECK(cudaMemcpyAsync(b.host_offsets_pinned, a.offsets, sizeof(int32_t) * (c.num_experts + 1),
                               cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    a.host_offsets.assign(b.host_offsets_pinned, b.host_offsets_pinned + c.num_experts + 1);
  }
  return x;
}

void GpuEngine::expert_gemm(GroupedLayout layout, const ExpertRows& x, int a_cols, int c_cols, const bf16* A,
                            const bf16* B, bf16* C) {
  if (sm90_gemm_)
    sm90_gemm_->run(layout, x.offsets, x.experts, a_cols, c_cols, A, B, C, stream_);
  else
    grouped_gemm(layout, x.offsets, x.experts, x.rows, a_cols, c_cols, A, B, C, stream_);
}

void GpuEngine::mlp_forward(int l, const GpuWeights& weights, bool recomputing) {
  const ModelConfig& c = config_;
  const LayerParams<bf16>& w = weights.layers[l];
  Layer& a = layers_[l];
  Buffers& b = *b_;
  const int N = tokens_, H = c.hidden_size;
  bf16* next = l + 1 < c.num_layers ? layers_[l + 1].input : b.final_input;
  mark(Phase::Other);
  rmsnorm_forward(a.norm2, a.rstd2, a.mid, w.post_norm, N, H, c.rms_norm_eps, stream_);
  if (!c.layer_is_sparse[l]) {
    const int Id = c.dense_intermediate_size;
    mark(Phase::OtherGemm);
    gemm_.linear_forward(a.gate_up, a.norm2, w.mlp_gate_up, N, H, 2 * Id);
    mark(Phase::Other);
    swiglu_forward(a.act, a.gate_up, N, Id, stream_);
    if (recomputing) return;  // the backward reads gate_up and act, not the output
    mark(Phase::OtherGemm);
    gemm_.linear_forward(b.mlp_out, a.act, w.mlp_down, N, Id, H);
  } else {
    const int E = c.num_experts, K = c.top_k, I = c.moe_intermediate_size;
    const long rows = static_cast<long>(N) * K;
    mark(Phase::Router);
    gemm_.matmul(false, true, N, E, H, a.norm2, H, w.router, H, a.router_logits, E, true);
    router_forward(a.probs, a.top_index, a.top_weight, a.router_logits, N, E, K, c.norm_topk_prob, stream_);
    if (!recomputing)
      router_balance_stats(b.pick_counts, b.prob_sums, a.probs, a.top_index, N, E, K, b.balance_scratch, stream_);
    mark(Phase::Permute);
    moe_build_routing(a.offsets, a.row_token, a.row_slot, a.token_slot_row, a.top_index, N, E, K, b.routing_scratch, stream_);
    moe_gather(a.gathered, a.norm2, a.row_token, rows, H, stream_);
    if (exchange_) mark(Phase::Communication);
    const ExpertRows x = expert_rows(l, true);
    if (exchange_) exchange_->to_experts(l, a.gathered, a.expert_in, H, b.exchange_staging, stream_);
    mark(Phase::ExpertGemm);
    // The re-run forward of transient expert rows stops at gate_up: the backward recomputes the activation from it and
    // needs no expert output (Layer::expert_in).
    const bool outputs = !(recomputing && transient_expert_rows_);
    if (x.rows > 0) {
      if (x.own)
        expert_gemm(GroupedLayout::kNT, x, H, 2 * I, a.expert_in, w.experts_gate_up, a.gate_up);
      else
        gemm_.grouped_linear_forward(a.gate_up, a.expert_in, w.experts_gate_up, a.host_offsets, H, 2 * I);
    }
    if (x.rows > 0 && outputs) {
      mark(Phase::Other);
      bf16* expert_act = transient_expert_rows_ ? b.d_act : a.act;  // (R, I)
      swiglu_forward(expert_act, a.gate_up, static_cast<int>(x.rows), I, stream_);
      mark(Phase::ExpertGemm);
      if (x.own)
        expert_gemm(GroupedLayout::kNT, x, I, H, expert_act, w.experts_down, a.expert_rows_out);
      else
        gemm_.grouped_linear_forward(a.expert_rows_out, expert_act, w.experts_down, a.host_offsets, I, H);
    }
    if (exchange_) {
      mark(Phase::Communication);
      exchange_->from_experts(l, a.expert_rows_out, a.expert_out, H, b.exchange_staging, stream_);
    }
    if (c.has_shared_expert()) shared_expert_forward(l, weights);
    if (recomputing) return;  // the backward reads no combined output (nor, with transient rows, any expert output)
    mark(Phase::Permute);
    moe_combine_forward(b.mlp_out, a.expert_out, a.top_weight, a.token_slot_row, N, H, K, stream_);
    if (c.has_shared_expert()) {
      mark(Phase::Other);
      sigmoid_gate_forward(b.mlp_out, a.shared_out, a.shared_gate_logit, N, H, stream_);
    }
  }
  mark(Phase::Other);
  add_bf16(next, a.mid, b.mlp_out, static_cast<size_t>(N) * H, stream_);
}

// Input: b.d_stream = d(layer output). Output: b.d_mid = d(mid).
void GpuEngine::mlp_backward(int l, const GpuWeights& weights, const GpuWeights& grads,
                             const GradientSink::ExpertStep* step) {
  const ModelConfig& c = config_;
  const LayerParams<bf16>& w = weights.layers[l];
  const LayerParams<bf16>& g = grads.layers[l];
  Layer& a = layers_[l];
  Buffers& b = *b_;
  const int N = tokens_, H = c.hidden_size;
  if (!c.layer_is_sparse[l]) {
    const int Id = c.dense_intermediate_size;
    mark(Phase::OtherGemm);
    gemm_.linear_backward(b.d_act, g.mlp_down, b.d_stream, a.act, w.mlp_down, N, Id, H);
    mark(Phase::Other);
    swiglu_backward(b.d_gate_up, b.d_act, a.gate_up, N, Id, stream_);
    mark(Phase::OtherGemm);
    gemm_.linear_backward(b.d_norm, g.mlp_gate_up, b.d_gate_up, a.norm2, w.mlp_gate_up, N, H, 2 * Id);
  } else {
    const int E = c.num_experts, K = c.top_k, I = c.moe_intermediate_size;
    const long rows = static_cast<long>(N) * K;
    mark(Phase::Permute);
    if (transient_expert_rows_)  // d(expert output) unweighted; the routing weights' gradient comes after the down dgrad
      moe_gather(b.d_rows, b.d_stream, a.row_token, rows, H, stream_);
    else
      moe_combine_backward(b.d_rows, b.d_top_weight, b.d_stream, a.expert_out, a.top_weight, a.row_token, a.row_slot,
                           rows, H, K, stream_);
    const ExpertRows x = expert_rows(l, false);
    // The down weight gradient's input: the activation, or (transient rows) the weighted activation that
    // swiglu_backward_routed writes where the rows were, since the output gradient it pairs with is unweighted.
    const bf16* down_input = transient_expert_rows_ ? a.expert_in : a.act;
    // The return exchange of d(expert input) beside the gate_up weight gradient (GpuEngineOptions::overlap_exchange).
    const bool overlap = exchange_stream_ && x.own && x.rows > 0;
    bf16* d_expert = b.d_rows;  // expert side: d(expert output), then d(expert input)
    if (exchange_) {
      mark(Phase::Communication);
      d_expert = b.d_expert_rows;
      exchange_->to_experts(l, b.d_rows, d_expert, H, b.exchange_staging, stream_);
    }
    // The weight gradients are added to the sink's buffer, or written over it (GradientSink::
    // overwrites_expert_gradients); the cuBLAS path only adds, so there, and when no row reaches this rank's experts,
    // an overwritten buffer is cleared first. With the sink's ExpertStep they never reach memory: each weight-gradient
    // GEMM steps its weights instead, after the data gradient that reads them (a zero gradient when no row does).
    const GroupedLayout weight_grad = overwrite_expert_grads_ ? GroupedLayout::kTNWrite : GroupedLayout::kTN;
    if (!step && overwrite_expert_grads_ && (!x.own || x.rows == 0)) {
      const size_t gate_up_elements = static_cast<size_t>(x.experts) * 2 * I * H;  // down holds half as many
      CUDA_CHECK(cudaMemsetAsync(g.experts_gate_up, 0, gate_up_elements * sizeof(bf16), stream_));
      CUDA_CHECK(cudaMemsetAsync(g.experts_down, 0, gate_up_elements / 2 * sizeof(bf16), stream_));
    }
    const auto down_weight_grad = [&] {  // d W_down[e] (+)= d_out_e^T · act_e, or the step it makes
      if (step)
        grouped_gemm_adamw(x.offsets, x.experts, H, I, d_expert, down_input, w.experts_down, step->down, stream_);
      else
        expert_gemm(weight_grad, x, H, I, d_expert, down_input, g.experts_down);
    };
    const auto gate_up_weight_grad = [&] {  // d W_gate_up[e] (+)= d_gate_up_e^T · in_e, or the step it makes
      if (step)
        grouped_gemm_adamw(x.offsets, x.experts, 2 * I, H, b.d_gate_up, a.expert_in, w.experts_gate_up, step->gate_up,
                           stream_);
      else
        expert_gemm(weight_grad, x, 2 * I, H, b.d_gate_up, a.expert_in, g.experts_gate_up);
    };
    if (x.rows > 0) {
      mark(Phase::ExpertGemm);
      if (x.own) {  // d_act = d_out · W_down[e], then the weight gradient
        expert_gemm(GroupedLayout::kNN, x, H, I, d_expert, w.experts_down, b.d_act);
        if (transient_expert_rows_) {
          mark(Phase::Other);
          swiglu_backward_routed(b.d_gate_up, b.d_top_weight, a.expert_in, b.d_act, a.gate_up, a.top_weight,
                                 a.row_token, a.row_slot, rows, I, K, stream_);
          mark(Phase::ExpertGemm);
        }
        down_weight_grad();
      } else {
        gemm_.grouped_linear_backward(b.d_act, g.experts_down, d_expert, a.act, w.experts_down, a.host_offsets, I, H);
      }
      if (transient_expert_rows_) {
        mark(Phase::Permute);
        moe_gather(a.expert_in, a.norm2, a.row_token, rows, H, stream_);
      } else {
        mark(Phase::Other);
        swiglu_backward(b.d_gate_up, b.d_act, a.gate_up, static_cast<int>(x.rows), I, stream_);
      }
      mark(Phase::ExpertGemm);
      if (x.own) {  // d_in = d_gate_up · W_gate_up[e], then the weight gradient
        expert_gemm(GroupedLayout::kNN, x, 2 * I, H, b.d_gate_up, w.experts_gate_up, d_expert);
        if (overlap) {
          // Fork: from_experts on exchange_stream_ once d_expert is complete. Until the join below, that stream alone
          // touches d_expert, b.exchange_staging, b.d_rows, the exchange's tables and buffers and the EP communicator,
          // and stream_ runs only the weight gradient (b.d_gate_up, a.expert_in, g.experts_gate_up or the weights and
          // moments it steps; with NVLink, a.expert_in is another exchange buffer than d_expert, and peers only read
          // d_expert meanwhile). No NCCL call on any communicator is enqueued in between, so every rank issues the same
          // sequence of them, in the same stream order as overlap off.
          CUDA_CHECK(cudaEventRecord(exchange_fork_, stream_));
          CUDA_CHECK(cudaStreamWaitEvent(exchange_stream_, exchange_fork_, 0));
          exchange_->from_experts(l, d_expert, b.d_rows, H, b.exchange_staging, exchange_stream_);
          CUDA_CHECK(cudaEventRecord(exchange_join_, exchange_stream_));
        }
        gate_up_weight_grad();
      } else {
        gemm_.grouped_linear_backward(d_expert, g.experts_gate_up, b.d_gate_up, a.expert_in, w.experts_gate_up,
                                      a.host_offsets, H, 2 * I);
      }
    } else if (step) {
      mark(Phase::ExpertGemm);
      down_weight_grad();
      gate_up_weight_grad();
    }
    if (exchange_) {
      mark(Phase::Communication);  // overlapped: only the wait for the part of the exchange the GEMM did not hide
      if (overlap)  // join: everything after reads b.d_rows, and the next exchange call must follow this one
        CUDA_CHECK(cudaStreamWaitEvent(stream_, exchange_join_, 0));
      else
        exchange_->from_experts(l, d_expert, b.d_rows, H, b.exchange_staging, stream_);
    }
    mark(Phase::Permute);
    moe_scatter_add_backward(b.d_norm, b.d_rows, a.token_slot_row, N, H, K, stream_);
    mark(Phase::Router);
    router_backward(b.d_router_logits, b.d_top_weight, b.d_probs_extra, a.probs, a.top_index, a.top_weight, N, E, K,
                    c.norm_topk_prob, stream_);
    convert_f32_to_bf16(b.d_router_logits16, b.d_router_logits, static_cast<size_t>(N) * E, stream_);
    gemm_.linear_backward(b.d_norm, g.router, b.d_router_logits16, a.norm2, w.router, N, H, E, 1.0f);
    if (c.has_shared_expert()) shared_expert_backward(l, weights, grads);
  }
  mark(Phase::Other);
  CUDA_CHECK(cudaMemsetAsync(b.norm_grad, 0, sizeof(float) * H, stream_));
  rmsnorm_backward(b.d_tmp, b.norm_grad, b.d_norm, a.mid, w.post_norm, a.rstd2, N, H, b.norm_scratch, stream_);
  add_norm_grad(g.post_norm, H);
  add_bf16(b.d_mid, b.d_stream, b.d_tmp, static_cast<size_t>(N) * H, stream_);
}

// shared_gate_up (N, 2Is), shared_act (N, Is), shared_out (N, H) = down(swiglu(gate_up(norm2))) and the gate's logit
// shared_gate_logit (N) = norm2 · shared_gate^T in fp32.
void GpuEngine::shared_expert_forward(int l, const GpuWeights& weights) {
  const ModelConfig& c = config_;
  const LayerParams<bf16>& w = weights.layers[l];
  Layer& a = layers_[l];
  const int N = tokens_, H = c.hidden_size, Is = c.shared_expert_intermediate_size;
  mark(Phase::OtherGemm);
  gemm_.linear_forward(a.shared_gate_up, a.norm2, w.shared_gate_up, N, H, 2 * Is);
  mark(Phase::Other);
  swiglu_forward(a.shared_act, a.shared_gate_up, N, Is, stream_);
  mark(Phase::OtherGemm);
  gemm_.linear_forward(a.shared_out, a.shared_act, w.shared_down, N, Is, H);
  gemm_.matmul(false, true, N, 1, H, a.norm2, H, w.shared_gate, H, a.shared_gate_logit, 1, true);
}

// Input: b.d_stream = d(MLP output). Adds the shared expert's and its gate's contributions to b.d_norm = d(norm2).
void GpuEngine::shared_expert_backward(int l, const GpuWeights& weights, const GpuWeights& grads) {
  const ModelConfig& c = config_;
  const LayerParams<bf16>& w = weights.layers[l];
  const LayerParams<bf16>& g = grads.layers[l];
  Layer& a = layers_[l];
  Buffers& b = *b_;
  const int N = tokens_, H = c.hidden_size, Is = c.shared_expert_intermediate_size;
  bf16* d_shared_out = b.d_tmp;  // (N, H)
  mark(Phase::Other);
  sigmoid_gate_backward(d_shared_out, b.d_shared_gate_logit, b.d_stream, a.shared_out, a.shared_gate_logit, N, H,
                        stream_);
  mark(Phase::OtherGemm);
  gemm_.linear_backward(b.d_norm, g.shared_gate, b.d_shared_gate_logit, a.norm2, w.shared_gate, N, H, 1, 1.0f);
  gemm_.linear_backward(b.d_act, g.shared_down, d_shared_out, a.shared_act, w.shared_down, N, Is, H);
  mark(Phase::Other);
  swiglu_backward(b.d_gate_up, b.d_act, a.shared_gate_up, N, Is, stream_);
  mark(Phase::OtherGemm);
  gemm_.linear_backward(b.d_norm, g.shared_gate_up, b.d_gate_up, a.norm2, w.shared_gate_up, N, H, 2 * Is, 1.0f);
}

}  // namespace moetune::cuda
