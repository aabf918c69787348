// Why: the device-offset grouped GEMM (ops/cuda/grouped_gemm.h) in its layouts against the CPU twin (per-expert
// cpu::linear_forward / linear_backward on bf16-rounded inputs) and against the cuBLAS grouped path it replaces:
// uneven experts (0 rows, 1 row, 128 and 129 rows), N and M edges that are not multiples of the 128 tile, a grid
// bound that is too small, untouched rows past the last expert, untouched C[e] for empty experts (kTN; zeroed by
// kTNWrite, which must not read C), bitwise determinism, host shape checks, and a timing table on the Qwen3-30B-A3B
// expert shapes (prints only).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "grouped_gemm_cases.h"
#include "ops/cuda/gemm.h"
#include "ops/cuda/grouped_gemm.h"

namespace moetune::testing {
namespace {

// The three products of the expert projection, as the header maps them.
void run_products(DeviceCase& d, const ExpertCase& c, long max_rows) {
  cuda::grouped_gemm(GroupedLayout::kNT, d.offsets.data(), c.experts, max_rows, c.in_dim, c.out_dim, d.x.data(),
                     d.w.data(), d.y.data(), nullptr);
  cuda::grouped_gemm(GroupedLayout::kNN, d.offsets.data(), c.experts, max_rows, c.out_dim, c.in_dim, d.dy.data(),
                     d.w.data(), d.dx.data(), nullptr);
  cuda::grouped_gemm(GroupedLayout::kTN, d.offsets.data(), c.experts, max_rows, c.out_dim, c.in_dim, d.dy.data(),
                     d.x.data(), d.dw.data(), nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
}

TEST(CudaGroupedGemm, SmallShapesMatchCpu) {
  SKIP_WITHOUT_GPU();
  // N = 192 for kNT (and M = 192 for kTN) ends in a half tile; 129 rows = a full tile + 1 row; 128 rows exactly one.
  {
    const ExpertCase c = make_case({129, 0, 1, 128, 75}, /*in_dim=*/128, /*out_dim=*/192, 11, true);
    DeviceCase d(c);
    run_products(d, c, c.rows);
    expect_matches_cpu(c, d, "E=5 in=128 out=192");
  }
  // The transposed shape (N = 192 for kNN and kTN), empty first and last experts, a K tail of 63 rows for kTN.
  {
    const ExpertCase c = make_case({0, 300, 1, 63, 0}, /*in_dim=*/192, /*out_dim=*/128, 21, true);
    DeviceCase d(c);
    run_products(d, c, c.rows);
    expect_matches_cpu(c, d, "E=5 in=192 out=128");
  }
}

// kTNWrite over a C holding NaNs (stale memory it must not read): the product alone, zeros for empty experts.
TEST(CudaGroupedGemm, WeightGradientWriteMatchesCpu) {
  SKIP_WITHOUT_GPU();
  check_weight_gradient_write("portable", [](const ExpertCase& c, DeviceCase& d) {
    cuda::grouped_gemm(GroupedLayout::kTNWrite, d.offsets.data(), c.experts, c.rows, c.out_dim, c.in_dim, d.dy.data(),
                       d.x.data(), d.dw.data(), nullptr);
  });
}

TEST(CudaGroupedGemm, GridBoundOnlyAffectsSpeed) {
  SKIP_WITHOUT_GPU();
  const ExpertCase c = make_case({129, 0, 1, 257, 40, 3}, /*in_dim=*/64, /*out_dim=*/320, 31, true);
  {
    DeviceCase d(c);
    run_products(d, c, /*max_rows=*/1);  // far too small: each CTA loops over several row tiles
    expect_matches_cpu(c, d, "max_rows=1");
  }
  {
    DeviceCase d(c);
    run_products(d, c, /*max_rows=*/4L * c.rows);  // generous: the surplus CTAs exit
    expect_matches_cpu(c, d, "max_rows=4*rows");
  }
}

TEST(CudaGroupedGemm, ManySparseExpertsMatchCpu) {
  SKIP_WITHOUT_GPU();
  // E = 256 (the maximum): the tile prefix spans every warp of the scan; most experts are empty.
  std::vector<int> counts(cuda::kGroupedGemmMaxExperts, 0);
  for (int e = 0; e < cuda::kGroupedGemmMaxExperts; e += 5) counts[e] = e % 7 + 1;
  counts[0] = 0;
  counts[101] = 129;
  counts[255] = 130;
  const ExpertCase c = make_case(counts, /*in_dim=*/64, /*out_dim=*/128, 35, true);
  DeviceCase d(c);
  run_products(d, c, c.rows);
  expect_matches_cpu(c, d, "E=256 sparse");
}

TEST(CudaGroupedGemm, RealisticShapeMatchesCpu) {
  SKIP_WITHOUT_GPU();
  const ExpertCase c = make_case(kRealisticCounts, kRealisticIn, kRealisticOut, 41, true);
  DeviceCase d(c);
  run_products(d, c, c.rows);
  expect_matches_cpu(c, d, "E=16 in=2048 out=1536");
}

TEST(CudaGroupedGemm, RealisticShapeMatchesCublasGroupedPath) {
  SKIP_WITHOUT_GPU();
  const ExpertCase c = make_case(kRealisticCounts, kRealisticIn, kRealisticOut, 51, false);
  DeviceCase ours(c), theirs(c);
  run_products(ours, c, c.rows);
  cuda::Gemm gemm(nullptr);
  gemm.grouped_linear_forward(theirs.y.data(), theirs.x.data(), theirs.w.data(), c.offsets, c.in_dim, c.out_dim);
  gemm.grouped_linear_backward(theirs.dx.data(), theirs.dw.data(), theirs.dy.data(), theirs.x.data(), theirs.w.data(),
                               c.offsets, c.in_dim, c.out_dim);
  CUDA_CHECK(cudaDeviceSynchronize());
  const double err_nt = relative_norm_error(to_host_f32(ours.y), to_host_f32(theirs.y));
  const double err_nn = relative_norm_error(to_host_f32(ours.dx), to_host_f32(theirs.dx));
  const double err_tn = relative_norm_error(to_host_f32(ours.dw), to_host_f32(theirs.dw));
  std::printf("[grouped gemm] vs cuBLAS grouped: rel. difference NT %.2e  NN %.2e  TN %.2e\n", err_nt, err_nn, err_tn);
  EXPECT_LE(err_nt, kBf16RoundTrip);
  EXPECT_LE(err_nn, kBf16RoundTrip);
  EXPECT_LE(err_tn, kBf16RoundTrip);
}

TEST(CudaGroupedGemm, RunsAreBitwiseIdentical) {
  SKIP_WITHOUT_GPU();
  const ExpertCase c = make_case(kRealisticCounts, kRealisticIn, kRealisticOut, 61, false);
  DeviceCase first(c), second(c);
  run_products(first, c, c.rows);
  run_products(second, c, 2L * c.rows);  // a different grid must not change the result either
  expect_bitwise_same(first, second);
}

TEST(CudaGroupedGemm, RejectsBadShapesBeforeLaunching) {
  SKIP_WITHOUT_GPU();
  const ExpertCase c = make_case({3, 5}, 64, 64, 71, false);
  DeviceCase d(c);
  const auto call = [&](int experts, int a_cols, int c_cols, const bf16* A) {
    cuda::grouped_gemm(GroupedLayout::kNT, d.offsets.data(), experts, c.rows, a_cols, c_cols, A, d.w.data(), d.y.data(),
                       nullptr);
  };
  EXPECT_THROW(call(2, 100, 64, d.x.data()), Error);   // a_cols not a multiple of 64
  EXPECT_THROW(call(2, 64, 0, d.x.data()), Error);     // c_cols zero
  EXPECT_THROW(call(0, 64, 64, d.x.data()), Error);    // no experts
  EXPECT_THROW(call(257, 64, 64, d.x.data()), Error);  // too many experts
  EXPECT_THROW(call(2, 64, 64, d.x.data() + 1), Error);  // A not 16-byte aligned
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

// Qwen3-30B-A3B experts: E = 128, 4096 tokens x top-8 = 32768 rows (uneven, two experts empty), H = 2048, I = 768;
// gate_up W (E, 1536, 2048), down W (E, 2048, 768). Prints ms and TFLOP/s for this kernel and cuBLAS's grouped path.
TEST(CudaGroupedGemmTiming, Qwen3ExpertShapes) {
  SKIP_WITHOUT_GPU();
  Qwen3ExpertBuffers b;
  constexpr int kExperts = Qwen3ExpertBuffers::kExperts, kRows = Qwen3ExpertBuffers::kRows;
  constexpr int kHidden = Qwen3ExpertBuffers::kHidden, kInter = Qwen3ExpertBuffers::kInter;
  constexpr int kGateUp = Qwen3ExpertBuffers::kGateUp;
  const std::vector<int>& counts = b.counts;
  const std::vector<int32_t>& offsets = b.host_offsets;
  const DeviceBuffer<int32_t>& offsets_d = b.offsets;
  std::printf("[grouped gemm timing] E=%d rows=%d, rows per expert %d..%d\n", kExperts, kRows,
              *std::min_element(counts.begin(), counts.end()), *std::max_element(counts.begin(), counts.end()));

  DeviceBuffer<bf16> scratch_h(b.h.size()), scratch_x(b.x.size()), scratch_act(b.act.size());

  cuda::Gemm gemm(nullptr);
  const auto ours = [&](GroupedLayout layout, int a_cols, int c_cols, const bf16* A, const bf16* B, bf16* C) {
    return time_ms(
        [&] { cuda::grouped_gemm(layout, offsets_d.data(), kExperts, kRows, a_cols, c_cols, A, B, C, nullptr); });
  };
  const auto tflops = [&](double ms, int a_cols, int c_cols) {
    return cuda::grouped_gemm_flops(kRows, a_cols, c_cols) / (ms * 1e-3) / 1e12;
  };
  const auto row = [&](const char* name, int a_cols, int c_cols, double ours_ms, double cublas_ms) {
    std::printf("[grouped gemm timing] %-36s ours %7.3f ms %6.1f TFLOP/s | cuBLAS grouped %7.3f ms %6.1f TFLOP/s\n",
                name, ours_ms, tflops(ours_ms, a_cols, c_cols), cublas_ms, tflops(cublas_ms, a_cols, c_cols));
  };

  // Forward.
  const double fwd_gu = ours(GroupedLayout::kNT, kHidden, kGateUp, b.x.data(), b.w_gate_up.data(), b.h.data());
  const double fwd_gu_cublas = time_ms([&] {
    gemm.grouped_linear_forward(scratch_h.data(), b.x.data(), b.w_gate_up.data(), offsets, kHidden, kGateUp);
  });
  row("gate_up fwd  NT (rows,2048)->1536", kHidden, kGateUp, fwd_gu, fwd_gu_cublas);
  const double fwd_down = ours(GroupedLayout::kNT, kInter, kHidden, b.act.data(), b.w_down.data(), b.out.data());
  const double fwd_down_cublas = time_ms(
      [&] { gemm.grouped_linear_forward(scratch_x.data(), b.act.data(), b.w_down.data(), offsets, kInter, kHidden); });
  row("down    fwd  NT (rows,768)->2048", kInter, kHidden, fwd_down, fwd_down_cublas);
  CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_LE(relative_norm_error(to_host_f32(b.h), to_host_f32(scratch_h)), kBf16RoundTrip)
      << "gate_up forward vs cuBLAS";
  EXPECT_LE(relative_norm_error(to_host_f32(b.out), to_host_f32(scratch_x)), kBf16RoundTrip)
      << "down forward vs cuBLAS";

  // Backward: data gradients (kNN) and weight gradients (kTN). cuBLAS's path only runs them together (dgrad + wgrad)
  // or wgrad alone, so its dgrad time is the difference.
  const double dgrad_gu =
      ours(GroupedLayout::kNN, kGateUp, kHidden, b.d_h.data(), b.w_gate_up.data(), scratch_x.data());
  const double wgrad_gu = ours(GroupedLayout::kTN, kGateUp, kHidden, b.d_h.data(), b.x.data(), b.dw_gate_up.data());
  const double bwd_gu_cublas = time_ms([&] {
    gemm.grouped_linear_backward(scratch_x.data(), b.dw_gate_up.data(), b.d_h.data(), b.x.data(), b.w_gate_up.data(),
                                 offsets, kHidden, kGateUp);
  });
  const double wgrad_gu_cublas = time_ms([&] {
    gemm.grouped_linear_backward(nullptr, b.dw_gate_up.data(), b.d_h.data(), b.x.data(), b.w_gate_up.data(), offsets,
                                 kHidden, kGateUp);
  });
  row("gate_up dgrad NN (rows,1536)->2048", kGateUp, kHidden, dgrad_gu, bwd_gu_cublas - wgrad_gu_cublas);
  row("gate_up wgrad TN (E,1536,2048)+=", kGateUp, kHidden, wgrad_gu, wgrad_gu_cublas);

  const double dgrad_down =
      ours(GroupedLayout::kNN, kHidden, kInter, b.d_out.data(), b.w_down.data(), scratch_act.data());
  const double wgrad_down = ours(GroupedLayout::kTN, kHidden, kInter, b.d_out.data(), b.act.data(), b.dw_down.data());
  const double bwd_down_cublas = time_ms([&] {
    gemm.grouped_linear_backward(scratch_act.data(), b.dw_down.data(), b.d_out.data(), b.act.data(), b.w_down.data(),
                                 offsets, kInter, kHidden);
  });
  const double wgrad_down_cublas = time_ms([&] {
    gemm.grouped_linear_backward(nullptr, b.dw_down.data(), b.d_out.data(), b.act.data(), b.w_down.data(), offsets,
                                 kInter, kHidden);
  });
  row("down    dgrad NN (rows,2048)->768", kHidden, kInter, dgrad_down, bwd_down_cublas - wgrad_down_cublas);
  row("down    wgrad TN (E,2048,768)+=", kHidden, kInter, wgrad_down, wgrad_down_cublas);

  const double ours_total = fwd_gu + fwd_down + dgrad_gu + wgrad_gu + dgrad_down + wgrad_down;
  const double cublas_total = fwd_gu_cublas + fwd_down_cublas + bwd_gu_cublas + bwd_down_cublas;
  std::printf("[grouped gemm timing] one MoE layer fwd+bwd: ours %.3f ms, cuBLAS grouped %.3f ms (%.2fx)\n", ours_total,
              cublas_total, cublas_total / ours_total);
  CUDA_CHECK(cudaDeviceSynchronize());
}

}  // namespace
}  // namespace moetune::testing
