// Why: every matrix product of the GPU engine, in row-major terms, on cuBLAS with bf16 inputs and fp32 accumulation.
// Dense products (attention projections, router, LM head) are single GEMMs; the experts' products are grouped GEMMs, one
// launch per projection for all experts, sized from per-expert token counts the caller already has on the host.
#pragma once

#include <cstdint>
#include <vector>

#include "ops/cuda/cuda_check.h"

namespace moetune::cuda {

// Owns the cuBLAS handle and a small pinned/device staging area for grouped-GEMM pointer arrays.
class Gemm {
 public:
  explicit Gemm(cudaStream_t stream, int max_groups = 512);
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  // C (M, N) = alpha * op(A) op(B) + beta * C, all row-major. op(A) is (M, K): A stored (M, K) or, with trans_a,
  // (K, M); op(B) is (K, N): B stored (K, N) or, with trans_b, (N, K). C may be bf16 or fp32 (c_fp32).
  void matmul(bool trans_a, bool trans_b, int M, int N, int K, const bf16* A, int lda, const bf16* B, int ldb, void* C,
              int ldc, bool c_fp32, float alpha = 1.0f, float beta = 0.0f);

  // nn.Linear forward: out (rows, out_dim) = in (rows, in_dim) · weight (out_dim, in_dim)^T (+ beta * out).
  void linear_forward(bf16* out, const bf16* in, const bf16* weight, int rows, int in_dim, int out_dim, float beta = 0.0f);
  // d_in (rows, in_dim) = d_out · weight (+ beta_in * d_in); d_weight (out_dim, in_dim) += d_out^T · in.
  void linear_backward(bf16* d_in, bf16* d_weight, const bf16* d_out, const bf16* in, const bf16* weight, int rows,
                       int in_dim, int out_dim, float beta_in = 0.0f);

  // Grouped nn.Linear over experts: rows [offsets[e], offsets[e+1]) of `in` (rows, in_dim) use weight e of
  // `weights` (E, out_dim, in_dim). offsets: host copy (E + 1).
  void grouped_linear_forward(bf16* out, const bf16* in, const bf16* weights, const std::vector<int32_t>& offsets,
                              int in_dim, int out_dim);
  // d_in rows = d_out rows · weight e (overwritten); d_weights[e] += d_out_e^T · in_e.
  void grouped_linear_backward(bf16* d_in, bf16* d_weights, const bf16* d_out, const bf16* in, const bf16* weights,
                               const std::vector<int32_t>& offsets, int in_dim, int out_dim);

  cublasHandle_t handle() const { return handle_; }

 private:
  struct Group {
    bool trans_a, trans_b;
    int M, N, K;
    const bf16* A;
    int lda;
    const bf16* B;
    int ldb;
    bf16* C;
    int ldc;
  };
  // One cublasGemmGroupedBatchedEx call over `groups` (each a group of size 1), all with the same alpha/beta.
  void grouped(const std::vector<Group>& groups, float beta);

  cudaStream_t stream_;
  cublasHandle_t handle_ = nullptr;
  int max_groups_;
  void* workspace_ = nullptr;          // cuBLAS workspace
  const void** pointers_host_ = nullptr;   // pinned (3 * max_groups)
  const void** pointers_device_ = nullptr; // (3 * max_groups) per in-flight call slot
  int pointer_slot_ = 0;
  static constexpr int kPointerSlots = 64;
  cudaEvent_t slot_events_[kPointerSlots] = {};
};

}  // namespace moetune::cuda
