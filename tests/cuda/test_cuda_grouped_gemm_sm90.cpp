// Why: the Hopper grouped GEMM (ops/cuda/grouped_gemm_sm90.h, CUTLASS wgmma + TMA) must honour exactly the contract of
// the portable kernel it replaces: the CPU twin's results in all its layouts on uneven experts (0 rows, 1 row, tile
// edges, K tails of the weight gradient), untouched rows past the last expert and untouched C[e] of empty experts
// (kTN; zeroed by kTNWrite, which must not read C), bitwise-identical repeated runs, host shape checks — and a timing
// table against the portable kernel on the Qwen3-30B-A3B expert shapes (prints only).
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "grouped_gemm_cases.h"
#include "ops/cuda/grouped_gemm.h"
#include "ops/cuda/grouped_gemm_sm90.h"

namespace moetune::testing {
namespace {

void run_products(cuda::Sm90GroupedGemm& gemm, DeviceCase& d, const ExpertCase& c) {
  gemm.run(GroupedLayout::kNT, d.offsets.data(), c.experts, c.in_dim, c.out_dim, d.x.data(), d.w.data(), d.y.data(),
           nullptr);
  gemm.run(GroupedLayout::kNN, d.offsets.data(), c.experts, c.out_dim, c.in_dim, d.dy.data(), d.w.data(), d.dx.data(),
           nullptr);
  gemm.run(GroupedLayout::kTN, d.offsets.data(), c.experts, c.out_dim, c.in_dim, d.dy.data(), d.x.data(), d.dw.data(),
           nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
}

void check_case(const std::vector<int>& counts, int in_dim, int out_dim, uint64_t seed, const std::string& label) {
  const ExpertCase c = make_case(counts, in_dim, out_dim, seed, true);
  cuda::Sm90GroupedGemm gemm(c.experts);
  DeviceCase d(c);
  run_products(gemm, d, c);
  expect_matches_cpu(c, d, "sm90 " + label);
}

TEST(CudaGroupedGemmSm90, SmallShapesMatchCpu) {
  SKIP_WITHOUT_GPU();
  // 129 rows = a full 128-row tile + 1; N = 192 ends in a partial 256-wide tile; 75 rows = a K tail for kTN.
  check_case({129, 0, 1, 128, 75}, /*in_dim=*/128, /*out_dim=*/192, 11, "E=5 in=128 out=192");
  // Empty first and last experts, a 63-row K tail, M = 192 for kTN.
  check_case({0, 300, 1, 63, 0}, /*in_dim=*/192, /*out_dim=*/128, 21, "E=5 in=192 out=128");
  // 64-wide dimensions (the smallest allowed), more experts than a single table block of 128 threads.
  std::vector<int> counts(130, 2);
  counts[7] = 0;
  counts[128] = 257;
  check_case(counts, /*in_dim=*/64, /*out_dim=*/64, 25, "E=130 in=64 out=64");
}

// kTNWrite over a C holding NaNs (stale memory it must not read): the product alone, zeros for empty experts.
TEST(CudaGroupedGemmSm90, WeightGradientWriteMatchesCpu) {
  SKIP_WITHOUT_GPU();
  check_weight_gradient_write("sm90", [](const ExpertCase& c, DeviceCase& d) {
    cuda::Sm90GroupedGemm gemm(c.experts);
    gemm.run(GroupedLayout::kTNWrite, d.offsets.data(), c.experts, c.out_dim, c.in_dim, d.dy.data(), d.x.data(),
             d.dw.data(), nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());  // before the tables are freed
  });
}

TEST(CudaGroupedGemmSm90, ManySparseExpertsMatchCpu) {
  SKIP_WITHOUT_GPU();
  std::vector<int> counts(cuda::kGroupedGemmMaxExperts, 0);
  for (int e = 0; e < cuda::kGroupedGemmMaxExperts; e += 5) counts[e] = e % 7 + 1;
  counts[101] = 129;
  counts[255] = 130;
  check_case(counts, /*in_dim=*/64, /*out_dim=*/128, 35, "E=256 sparse");
}

TEST(CudaGroupedGemmSm90, RealisticShapeMatchesCpu) {
  SKIP_WITHOUT_GPU();
  check_case(kRealisticCounts, kRealisticIn, kRealisticOut, 41, "E=16 in=2048 out=1536");
}

TEST(CudaGroupedGemmSm90, MatchesPortableKernel) {
  SKIP_WITHOUT_GPU();
  const ExpertCase c = make_case(kRealisticCounts, kRealisticIn, kRealisticOut, 51, false);
  DeviceCase sm90(c), portable(c);
  cuda::Sm90GroupedGemm gemm(c.experts);
  run_products(gemm, sm90, c);
  cuda::grouped_gemm(GroupedLayout::kNT, portable.offsets.data(), c.experts, c.rows, c.in_dim, c.out_dim,
                     portable.x.data(), portable.w.data(), portable.y.data(), nullptr);
  cuda::grouped_gemm(GroupedLayout::kNN, portable.offsets.data(), c.experts, c.rows, c.out_dim, c.in_dim,
                     portable.dy.data(), portable.w.data(), portable.dx.data(), nullptr);
  cuda::grouped_gemm(GroupedLayout::kTN, portable.offsets.data(), c.experts, c.rows, c.out_dim, c.in_dim,
                     portable.dy.data(), portable.x.data(), portable.dw.data(), nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  const double err_nt = relative_norm_error(to_host_f32(sm90.y), to_host_f32(portable.y));
  const double err_nn = relative_norm_error(to_host_f32(sm90.dx), to_host_f32(portable.dx));
  const double err_tn = relative_norm_error(to_host_f32(sm90.dw), to_host_f32(portable.dw));
  std::printf("[grouped gemm sm90] vs portable kernel: rel. difference NT %.2e  NN %.2e  TN %.2e\n", err_nt, err_nn,
              err_tn);
  EXPECT_LE(err_nt, kBf16RoundTrip);
  EXPECT_LE(err_nn, kBf16RoundTrip);
  EXPECT_LE(err_tn, kBf16RoundTrip);
}

TEST(CudaGroupedGemmSm90, RunsAreBitwiseIdentical) {
  SKIP_WITHOUT_GPU();
  const ExpertCase c = make_case(kRealisticCounts, kRealisticIn, kRealisticOut, 61, false);
  DeviceCase first(c), second(c);
  cuda::Sm90GroupedGemm gemm(c.experts);
  run_products(gemm, first, c);
  run_products(gemm, second, c);
  expect_bitwise_same(first, second);
}

TEST(CudaGroupedGemmSm90, RejectsBadShapesBeforeLaunching) {
  SKIP_WITHOUT_GPU();
  const ExpertCase c = make_case({3, 5}, 64, 64, 71, false);
  DeviceCase d(c);
  cuda::Sm90GroupedGemm gemm(2);
  const auto call = [&](int experts, int a_cols, int c_cols, const bf16* A) {
    gemm.run(GroupedLayout::kNT, d.offsets.data(), experts, a_cols, c_cols, A, d.w.data(), d.y.data(), nullptr);
  };
  EXPECT_THROW(call(2, 100, 64, d.x.data()), Error);     // a_cols not a multiple of 64
  EXPECT_THROW(call(2, 64, 0, d.x.data()), Error);       // c_cols zero
  EXPECT_THROW(call(0, 64, 64, d.x.data()), Error);      // no experts
  EXPECT_THROW(call(3, 64, 64, d.x.data()), Error);      // more experts than the tables hold
  EXPECT_THROW(call(2, 64, 64, d.x.data() + 1), Error);  // A not 16-byte aligned
  EXPECT_THROW(cuda::Sm90GroupedGemm(0), Error);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

// Qwen3-30B-A3B experts (E = 128, 32,768 uneven rows, H = 2048, I = 768): the six products of one MoE layer, this
// kernel against the portable one (weight gradients written, as the fused optimizer step asks for them).
TEST(CudaGroupedGemmSm90Timing, Qwen3ExpertShapes) {
  SKIP_WITHOUT_GPU();
  Qwen3ExpertBuffers b;
  constexpr int kExperts = Qwen3ExpertBuffers::kExperts, kRows = Qwen3ExpertBuffers::kRows;
  constexpr int kHidden = Qwen3ExpertBuffers::kHidden, kInter = Qwen3ExpertBuffers::kInter;
  constexpr int kGateUp = Qwen3ExpertBuffers::kGateUp;
  cuda::Sm90GroupedGemm sm90(kExperts);

  struct Product {
    const char* name;
    GroupedLayout layout;
    int a_cols, c_cols;
    const bf16 *A, *B;
    bf16* C;
  };
  const Product products[] = {
      {"gate_up fwd   NT (rows,2048)->1536", GroupedLayout::kNT, kHidden, kGateUp, b.x.data(), b.w_gate_up.data(),
       b.h.data()},
      {"down    fwd   NT (rows,768)->2048", GroupedLayout::kNT, kInter, kHidden, b.act.data(), b.w_down.data(),
       b.out.data()},
      {"gate_up dgrad NN (rows,1536)->2048", GroupedLayout::kNN, kGateUp, kHidden, b.d_h.data(), b.w_gate_up.data(),
       b.out.data()},
      {"gate_up wgrad TN (E,1536,2048)=", GroupedLayout::kTNWrite, kGateUp, kHidden, b.d_h.data(), b.x.data(),
       b.dw_gate_up.data()},
      {"down    dgrad NN (rows,2048)->768", GroupedLayout::kNN, kHidden, kInter, b.d_out.data(), b.w_down.data(),
       b.act.data()},
      {"down    wgrad TN (E,2048,768)=", GroupedLayout::kTNWrite, kHidden, kInter, b.d_out.data(), b.act.data(),
       b.dw_down.data()},
  };
  double total_sm90 = 0.0, total_portable = 0.0;
  for (const Product& p : products) {
    const double portable_ms = time_ms([&] {
      cuda::grouped_gemm(p.layout, b.offsets.data(), kExperts, kRows, p.a_cols, p.c_cols, p.A, p.B, p.C, nullptr);
    });
    const double sm90_ms =
        time_ms([&] { sm90.run(p.layout, b.offsets.data(), kExperts, p.a_cols, p.c_cols, p.A, p.B, p.C, nullptr); });
    const double flops = cuda::grouped_gemm_flops(kRows, p.a_cols, p.c_cols);
    std::printf("[grouped gemm sm90 timing] %-36s sm90 %7.3f ms %6.1f TFLOP/s | portable %7.3f ms %6.1f TFLOP/s\n",
                p.name, sm90_ms, flops / (sm90_ms * 1e-3) / 1e12, portable_ms, flops / (portable_ms * 1e-3) / 1e12);
    total_sm90 += sm90_ms;
    total_portable += portable_ms;
  }
  std::printf("[grouped gemm sm90 timing] one MoE layer fwd+bwd: sm90 %.3f ms, portable %.3f ms (%.2fx)\n", total_sm90,
              total_portable, total_portable / total_sm90);
  CUDA_CHECK(cudaDeviceSynchronize());
}

}  // namespace
}  // namespace moetune::testing
