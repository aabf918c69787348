// Why: the routed experts' projections are grouped GEMMs over the permuted token rows (expert e owns rows
// [expert_offsets[e], expert_offsets[e+1]) of the activation matrix). cuBLAS's grouped GEMM (ops/cuda/gemm.h) needs
// the per-expert counts on the host, i.e. a device->host sync per layer, and reaches about a quarter of the H200's
// bf16 peak on these shapes. This kernel family reads expert_offsets on the device: the grid is sized from a host-known
// upper bound of the row count and each CTA finds its expert itself. bf16 inputs, fp32 accumulation, bf16 outputs.
// Every output element is produced by one CTA with a fixed summation order: two runs are bitwise identical.
//
// Shapes (rows = expert_offsets[E], the permuted rows; A always has a_cols columns, C (or C[e]) always has c_cols):
//   kNT  C (rows, c_cols)       = A (rows, a_cols) · B[e]^T     B (E, c_cols, a_cols)   nn.Linear forward
//   kNN  C (rows, c_cols)       = A (rows, a_cols) · B[e]       B (E, a_cols, c_cols)   data gradient
//   kTN  C (E, a_cols, c_cols) += A_e^T · B_e   A (rows, a_cols), B (rows, c_cols)     weight gradient
//   kTNWrite  as kTN with C (E, a_cols, c_cols) = A_e^T · B_e: C is written, never read, and C[e] of an expert with
//        0 rows becomes zeros (a gradient buffer that need not be cleared first)
// where row r of A, B (kTN) and C (kNT/kNN) belongs to the expert e with expert_offsets[e] <= r < expert_offsets[e+1],
// and A_e, B_e are those rows. kNT and kNN overwrite C's rows [0, rows) and leave rows past expert_offsets[E]
// untouched; kTN accumulates into the existing bf16 C[e] (fp32 sum of old value and product, rounded once) and leaves
// C[e] of experts with 0 rows untouched (kTNWrite: the product alone, zeros for experts with 0 rows).
//
// For an expert projection W (E, out_dim, in_dim) applied to x (rows, in_dim), d_out (rows, out_dim):
//   forward  y   = grouped_gemm(kNT, ..., a_cols = in_dim,  c_cols = out_dim, A = x,     B = W, C = y)
//   d_in     dx  = grouped_gemm(kNN, ..., a_cols = out_dim, c_cols = in_dim,  A = d_out, B = W, C = dx)
//   d_weight dW += grouped_gemm(kTN, ..., a_cols = out_dim, c_cols = in_dim,  A = d_out, B = x, C = dW)
//
// grouped_gemm_adamw is kTNWrite whose epilogue, instead of storing the weight gradient, takes the AdamW step of the
// weights themselves (recipe (a): bf16 weights and moments): the gradient never goes to memory, which saves its write
// and read, and the weights' and moments' traffic runs beside other CTAs' tensor-core work instead of after the
// backward pass.
#pragma once

#include <cstdint>

#include "ops/cuda/adamw.h"
#include "ops/cuda/cuda_check.h"

namespace moetune::cuda {

constexpr int kGroupedGemmMaxExperts = 256;
constexpr int kGroupedGemmDimMultiple = 64;  // a_cols and c_cols must be positive multiples of this

enum class GroupedLayout { kNT, kNN, kTN, kTNWrite };

// expert_offsets: device (E + 1), non-decreasing, expert_offsets[0] = 0; E = experts in [1, 256]. max_rows: an upper
// bound of expert_offsets[E] known on the host (e.g. tokens * top_k); it only sizes the grid of kNT/kNN (an
// underestimate costs speed, never correctness) and is unused by kTN/kTNWrite. Rows per expert are arbitrary (0
// included). A, B, C: 16-byte aligned. Fails (moetune::Error) on bad shapes before anything is launched. No host synchronisation.
void grouped_gemm(GroupedLayout layout, const int32_t* expert_offsets, int experts, long max_rows, int a_cols,
                  int c_cols, const bf16* A, const bf16* B, bf16* C, cudaStream_t stream);

// AdamW on expert weights W (E, a_cols, c_cols) with bf16 moments m, v of the same shape, from the gradient
// G[e] = A_e^T · B_e of the kTN shapes above (A (rows, a_cols), B (rows, c_cols); experts with 0 rows: G[e] = 0). Each
// element's gradient is rounded to bf16 first, so W, m and v end bitwise as after grouped_gemm(kTNWrite) into a
// gradient buffer followed by adamw_bf16 over it (one span, `decay`). W must not be read by anything else in the
// meantime (its data gradient comes first). Same requirements and errors as grouped_gemm.
struct GroupedAdamW {
  bf16* m;
  bf16* v;
  AdamWHyper hyper;
  bool decay;
  float grad_scale;
};
void grouped_gemm_adamw(const int32_t* expert_offsets, int experts, int a_cols, int c_cols, const bf16* A,
                        const bf16* B, bf16* W, const GroupedAdamW& step, cudaStream_t stream);

// Floating-point operations of one grouped_gemm call over total_rows = expert_offsets[E] rows (any layout).
inline double grouped_gemm_flops(long total_rows, int a_cols, int c_cols) {
  return 2.0 * static_cast<double>(total_rows) * a_cols * c_cols;
}

}  // namespace moetune::cuda
