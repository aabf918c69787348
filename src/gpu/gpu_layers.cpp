// Why: the attention and MLP halves of a decoder layer on the GPU, forward and backward — the twins of
// model/cpu_attention.cpp and model/cpu_mlp.cpp.
#include <cmath>

#include "gpu/elementwise.h"
#include "gpu/gpu_engine_internal.h"
#include "ops/cuda/grouped_gemm.h"
#include "ops/cuda/moe_permute.h"
#include "ops/cuda/rmsnorm.h"
#include "ops/cuda/rope.h"
#include "ops/cuda/router.h"
#include "ops/cuda/swiglu.h"

namespace moetune::cuda {

namespace {
cpu::AttentionShape attention_shape(const ModelConfig& c, int batch, int seq_len, int layer) {
  return {batch, seq_len, c.num_heads, c.num_kv_heads, c.head_dim, c.sliding_window[layer],
          static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.head_dim)))};
}
}  // namespace

void GpuEngine::attention_forward(int l, const GpuWeights& weights) {
  const ModelConfig& c = config_;
  const LayerParams<bf16>& w = weights.layers[l];
  Layer& a = layers_[l];
  const int N = tokens_, H = c.hidden_size, Q = c.q_width(), KV = c.kv_width(), D = c.head_dim;
  mark(Phase::Other);
  rmsnorm_forward(a.norm1, a.rstd1, a.input, w.input_norm, N, H, c.rms_norm_eps, stream_);
  mark(Phase::OtherGemm);
  gemm_.linear_forward(a.q_proj, a.norm1, w.q_proj, N, H, Q);
  gemm_.linear_forward(a.k_proj, a.norm1, w.k_proj, N, H, KV);
  gemm_.linear_forward(a.v, a.norm1, w.v_proj, N, H, KV);
  mark(Phase::Other);
  switch (c.qk_norm) {
    case QkNorm::PerHead:
      rmsnorm_forward(a.q, a.q_rstd, a.q_proj, w.q_norm, N * c.num_heads, D, c.rms_norm_eps, stream_);
      rmsnorm_forward(a.k, a.k_rstd, a.k_proj, w.k_norm, N * c.num_kv_heads, D, c.rms_norm_eps, stream_);
      break;
    case QkNorm::FullWidth:
      rmsnorm_forward(a.q, a.q_rstd, a.q_proj, w.q_norm, N, Q, c.rms_norm_eps, stream_);
      rmsnorm_forward(a.k, a.k_rstd, a.k_proj, w.k_norm, N, KV, c.rms_norm_eps, stream_);
      break;
    case QkNorm::None:
      CUDA_CHECK(cudaMemcpyAsync(a.q, a.q_proj, sizeof(bf16) * N * Q, cudaMemcpyDeviceToDevice, stream_));
      CUDA_CHECK(cudaMemcpyAsync(a.k, a.k_proj, sizeof(bf16) * N * KV, cudaMemcpyDeviceToDevice, stream_));
      break;
  }
  rope_apply(a.q, b_->positions, N, c.num_heads, D, c.rope_theta, false, stream_);
  rope_apply(a.k, b_->positions, N, c.num_kv_heads, D, c.rope_theta, false, stream_);
  mark(Phase::Attention);
  attention_.forward(a.attn_out, a.stats, a.q, a.k, a.v, attention_shape(c, batch_, seq_len_, l));
  mark(Phase::OtherGemm);
  CUDA_CHECK(cudaMemcpyAsync(a.mid, a.input, sizeof(bf16) * N * H, cudaMemcpyDeviceToDevice, stream_));
  gemm_.linear_forward(a.mid, a.attn_out, w.o_proj, N, Q, H, 1.0f);
}

void GpuEngine::attention_backward(int l, const GpuWeights& weights, const GpuWeights& grads) {
  const ModelConfig& c = config_;
  const LayerParams<bf16>& w = weights.layers[l];
  const LayerParams<bf16>& g = grads.layers[l];
  Layer& a = layers_[l];
  Buffers& b = *b_;
  const int N = tokens_, H = c.hidden_size, Q = c.q_width(), KV = c.kv_width(), D = c.head_dim;
  mark(Phase::OtherGemm);
  gemm_.linear_backward(b.d_attn, g.o_proj, b.d_mid, a.attn_out, w.o_proj, N, Q, H);
  mark(Phase::Attention);
  attention_.backward(b.d_q, b.d_k, b.d_v, b.d_attn, a.q, a.k, a.v, a.attn_out, a.stats, attention_shape(c, batch_, seq_len_, l));
  mark(Phase::Other);
  rope_apply(b.d_q, b.positions, N, c.num_heads, D, c.rope_theta, true, stream_);
  rope_apply(b.d_k, b.positions, N, c.num_kv_heads, D, c.rope_theta, true, stream_);
  if (c.qk_norm != QkNorm::None) {
    const bool per_head = c.qk_norm == QkNorm::PerHead;
    CUDA_CHECK(cudaMemsetAsync(b.norm_grad, 0, sizeof(float) * (per_head ? D : Q), stream_));
    rmsnorm_backward(b.d_q, b.norm_grad, b.d_q, a.q_proj, w.q_norm, a.q_rstd, per_head ? N * c.num_heads : N,
                     per_head ? D : Q, b.norm_scratch, stream_);
    add_norm_grad(g.q_norm, per_head ? D : Q);
    CUDA_CHECK(cudaMemsetAsync(b.norm_grad, 0, sizeof(float) * (per_head ? D : KV), stream_));
    rmsnorm_backward(b.d_k, b.norm_grad, b.d_k, a.k_proj, w.k_norm, a.k_rstd, per_head ? N * c.num_kv_heads : N,
                     per_head ? D : KV, b.norm_scratch, stream_);
    add_norm_grad(g.k_norm, per_head ? D : KV);
  }
  mark(Phase::OtherGemm);
  gemm_.linear_backward(b.d_norm, g.q_proj, b.d_q, a.norm1, w.q_proj, N, H, Q);
  gemm_.linear_backward(b.d_norm, g.k_proj, b.d_k, a.norm1, w.k_proj, N, H, KV, 1.0f);
  gemm_.linear_backward(b.d_norm, g.v_proj, b.d_v, a.norm1, w.v_proj, N, H, KV, 1.0f);
  mark(Phase::Other);
  CUDA_CHECK(cudaMemsetAsync(b.norm_grad, 0, sizeof(float) * H, stream_));
  rmsnorm_backward(b.d_tmp, b.norm_grad, b.d_norm, a.input, w.input_norm, a.rstd1, N, H, b.norm_scratch, stream_);
  add_norm_grad(g.input_norm, H);
  add_bf16(b.d_stream, b.d_mid, b.d_tmp, static_cast<size_t>(N) * H, stream_);
}

void GpuEngine::mlp_forward(int l, const GpuWeights& weights) {
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
    mark(Phase::OtherGemm);
    gemm_.linear_forward(b.mlp_out, a.act, w.mlp_down, N, Id, H);
  } else {
    const int E = c.num_experts, K = c.top_k, I = c.moe_intermediate_size;
    const long rows = static_cast<long>(N) * K;
    mark(Phase::Router);
    gemm_.matmul(false, true, N, E, H, a.norm2, H, w.router, H, a.router_logits, E, true);
    router_forward(a.probs, a.top_index, a.top_weight, a.router_logits, N, E, K, c.norm_topk_prob, stream_);
    router_balance_stats(b.pick_counts, b.prob_sums, a.probs, a.top_index, N, E, K, b.balance_scratch, stream_);
    mark(Phase::Permute);
    moe_build_routing(a.offsets, a.row_token, a.row_slot, a.token_slot_row, a.top_index, N, E, K, b.routing_scratch, stream_);
    moe_gather(a.gathered, a.norm2, a.row_token, rows, H, stream_);
    const bool own = grouped_gemm_ == GroupedGemmBackend::Moetune;
    if (!own) {  // cuBLAS's grouped GEMM takes per-expert sizes on the host
      CUDA_CHECK(cudaMemcpyAsync(b.host_offsets_pinned, a.offsets, sizeof(int32_t) * (E + 1), cudaMemcpyDeviceToHost, stream_));
      CUDA_CHECK(cudaStreamSynchronize(stream_));
      a.host_offsets.assign(b.host_offsets_pinned, b.host_offsets_pinned + E + 1);
    }
    mark(Phase::ExpertGemm);
    if (own) grouped_gemm(GroupedLayout::kNT, a.offsets, E, rows, H, 2 * I, a.gathered, w.experts_gate_up, a.gate_up, stream_);
    else gemm_.grouped_linear_forward(a.gate_up, a.gathered, w.experts_gate_up, a.host_offsets, H, 2 * I);
    mark(Phase::Other);
    swiglu_forward(a.act, a.gate_up, static_cast<int>(rows), I, stream_);
    mark(Phase::ExpertGemm);
    if (own) grouped_gemm(GroupedLayout::kNT, a.offsets, E, rows, I, H, a.act, w.experts_down, a.expert_out, stream_);
    else gemm_.grouped_linear_forward(a.expert_out, a.act, w.experts_down, a.host_offsets, I, H);
    mark(Phase::Permute);
    moe_combine_forward(b.mlp_out, a.expert_out, a.top_weight, a.token_slot_row, N, H, K, stream_);
  }
  mark(Phase::Other);
  add_bf16(next, a.mid, b.mlp_out, static_cast<size_t>(N) * H, stream_);
}

// Input: b.d_stream = d(layer output). Output: b.d_mid = d(mid).
void GpuEngine::mlp_backward(int l, const GpuWeights& weights, const GpuWeights& grads) {
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
    moe_combine_backward(b.d_rows, b.d_top_weight, b.d_stream, a.expert_out, a.top_weight, a.row_token, a.row_slot, rows,
                         H, K, stream_);
    const bool own = grouped_gemm_ == GroupedGemmBackend::Moetune;
    mark(Phase::ExpertGemm);
    if (own) {  // d_act = d_rows · W_down[e];  d W_down[e] += d_rows_e^T · act_e
      grouped_gemm(GroupedLayout::kNN, a.offsets, E, rows, H, I, b.d_rows, w.experts_down, b.d_act, stream_);
      grouped_gemm(GroupedLayout::kTN, a.offsets, E, rows, H, I, b.d_rows, a.act, g.experts_down, stream_);
    } else {
      gemm_.grouped_linear_backward(b.d_act, g.experts_down, b.d_rows, a.act, w.experts_down, a.host_offsets, I, H);
    }
    mark(Phase::Other);
    swiglu_backward(b.d_gate_up, b.d_act, a.gate_up, static_cast<int>(rows), I, stream_);
    mark(Phase::ExpertGemm);
    if (own) {  // d_gathered = d_gate_up · W_gate_up[e];  d W_gate_up[e] += d_gate_up_e^T · gathered_e
      grouped_gemm(GroupedLayout::kNN, a.offsets, E, rows, 2 * I, H, b.d_gate_up, w.experts_gate_up, b.d_rows, stream_);
      grouped_gemm(GroupedLayout::kTN, a.offsets, E, rows, 2 * I, H, b.d_gate_up, a.gathered, g.experts_gate_up, stream_);
    } else {
      gemm_.grouped_linear_backward(b.d_rows, g.experts_gate_up, b.d_gate_up, a.gathered, w.experts_gate_up,
                                    a.host_offsets, H, 2 * I);
    }
    mark(Phase::Permute);
    moe_scatter_add_backward(b.d_norm, b.d_rows, a.token_slot_row, N, H, K, stream_);
    mark(Phase::Router);
    router_backward(b.d_router_logits, b.d_top_weight, b.d_probs_extra, a.probs, a.top_index, a.top_weight, N, E, K,
                    c.norm_topk_prob, stream_);
    convert_f32_to_bf16(b.d_router_logits16, b.d_router_logits, static_cast<size_t>(N) * E, stream_);
    gemm_.linear_backward(b.d_norm, g.router, b.d_router_logits16, a.norm2, w.router, N, H, E, 1.0f);
  }
  mark(Phase::Other);
  CUDA_CHECK(cudaMemsetAsync(b.norm_grad, 0, sizeof(float) * H, stream_));
  rmsnorm_backward(b.d_tmp, b.norm_grad, b.d_norm, a.mid, w.post_norm, a.rstd2, N, H, b.norm_scratch, stream_);
  add_norm_grad(g.post_norm, H);
  add_bf16(b.d_mid, b.d_stream, b.d_tmp, static_cast<size_t>(N) * H, stream_);
}

}  // namespace moetune::cuda
