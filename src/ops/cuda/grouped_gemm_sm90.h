// Why: the routed experts' grouped GEMMs on Hopper's warpgroup MMA (wgmma) fed by TMA, through CUTLASS's SM90
// pointer-array grouped kernels (persistent, warp-specialised). The portable kernel in ops/cuda/grouped_gemm.h uses
// mma.sync, which reaches about a third of the H200's bf16 peak; wgmma with TMA is the only way to the rest.
// Same contract as grouped_gemm (layouts, shapes, accumulation, no host synchronisation): a small kernel turns the
// device-side expert_offsets into CUTLASS's per-expert problem shapes, pointers and strides (device tables this object
// owns), and the persistent kernel reads them on the device. tests/cuda/test_cuda_grouped_gemm_sm90.cpp holds it to the
// CPU twin and to the portable kernel (bit-identical on the H200).
//
// Layouts as in grouped_gemm.h (rows = expert_offsets[E]):
//   kNT  C (rows, c_cols)       = A (rows, a_cols) · B[e]^T     B (E, c_cols, a_cols)
//   kNN  C (rows, c_cols)       = A (rows, a_cols) · B[e]       B (E, a_cols, c_cols)
//   kTN  C (E, a_cols, c_cols) += A_e^T · B_e   A (rows, a_cols), B (rows, c_cols)   (fp32 sum of the old bf16 value
//        and the product, rounded once; C[e] of experts with 0 rows untouched)
//   kTNWrite  C (E, a_cols, c_cols) = A_e^T · B_e (C not read; C[e] of experts with 0 rows zeroed)
// Summation order is fixed per output tile, so two runs are bitwise identical.
#pragma once

#include <cstdint>
#include <memory>

#include "ops/cuda/cuda_check.h"
#include "ops/cuda/grouped_gemm.h"

namespace moetune::cuda {

class Sm90GroupedGemm {
 public:
  // max_experts: the most experts any call will pass (sizes the device tables), in [1, kGroupedGemmMaxExperts].
  // Allocates on the current device; use the object on that device only.
  explicit Sm90GroupedGemm(int max_experts);
  ~Sm90GroupedGemm();
  Sm90GroupedGemm(const Sm90GroupedGemm&) = delete;
  Sm90GroupedGemm& operator=(const Sm90GroupedGemm&) = delete;

  // As grouped_gemm (ops/cuda/grouped_gemm.h) without max_rows: experts in [1, max_experts]; a_cols, c_cols positive
  // multiples of kGroupedGemmDimMultiple; A, B, C 16-byte aligned. Fails (moetune::Error) on bad shapes before
  // launching. The device tables are rewritten by every call: calls must be ordered on one stream (the next call's
  // table kernel waits for the previous GEMM in stream order).
  void run(GroupedLayout layout, const int32_t* expert_offsets, int experts, int a_cols, int c_cols, const bf16* A,
           const bf16* B, bf16* C, cudaStream_t stream);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace moetune::cuda
