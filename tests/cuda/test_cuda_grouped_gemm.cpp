// Why: the device-offset grouped GEMM (ops/cuda/grouped_gemm.h) in its three layouts against the CPU twin (per-expert
// cpu::linear_forward / linear_backward on bf16-rounded inputs) and against the cuBLAS grouped path it replaces:
// uneven experts (0 rows, 1 row, 128 and 129 rows), N and M edges that are not multiples of the 128 tile, a grid
// bound that is too small, untouched rows past the last expert, untouched C[e] for empty experts, bitwise determinism,
// host shape checks, and a timing table on the Qwen3-30B-A3B expert shapes (prints only).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "ops/cpu/linear.h"
#include "ops/cuda/gemm.h"
#include "ops/cuda/grouped_gemm.h"

namespace moetune::testing {
namespace {

using cuda::bf16;
using cuda::DeviceBuffer;
using cuda::GroupedLayout;

std::vector<int32_t> offsets_from_counts(const std::vector<int>& counts) {
  std::vector<int32_t> offsets(counts.size() + 1, 0);
  for (size_t e = 0; e < counts.size(); ++e) offsets[e + 1] = offsets[e] + counts[e];
  return offsets;
}

// One expert projection W (E, out_dim, in_dim) on x (rows, in_dim) with upstream gradient dy (rows, out_dim), all
// bf16-rounded, and (with_reference) the CPU results of its three grouped products:
// y = x_e · W[e]^T (kNT), dx = dy_e · W[e] (kNN), dw = dw_init + dy_e^T · x_e (kTN).
struct ExpertCase {
  int experts = 0, in_dim = 0, out_dim = 0, rows = 0;
  std::vector<int32_t> offsets;
  std::vector<float> x, w, dy, dw_init;
  std::vector<float> y, dx, dw;
};

ExpertCase make_case(const std::vector<int>& counts, int in_dim, int out_dim, uint64_t seed, bool with_reference) {
  ExpertCase c;
  c.experts = static_cast<int>(counts.size());
  c.in_dim = in_dim;
  c.out_dim = out_dim;
  c.offsets = offsets_from_counts(counts);
  c.rows = c.offsets.back();
  const size_t weight_size = static_cast<size_t>(out_dim) * in_dim;
  c.x = round_to_bf16(random_floats(static_cast<size_t>(c.rows) * in_dim, seed));
  c.w = round_to_bf16(random_floats(c.experts * weight_size, seed + 1, 0.1f));
  c.dy = round_to_bf16(random_floats(static_cast<size_t>(c.rows) * out_dim, seed + 2));
  c.dw_init = round_to_bf16(random_floats(c.experts * weight_size, seed + 3, 4.0f));  // kTN accumulates into this
  if (!with_reference) return c;
  c.y.assign(static_cast<size_t>(c.rows) * out_dim, 0.0f);
  c.dx.assign(static_cast<size_t>(c.rows) * in_dim, 0.0f);
  c.dw = c.dw_init;
  for (int e = 0; e < c.experts; ++e) {
    const size_t begin = c.offsets[e];
    const int count = c.offsets[e + 1] - c.offsets[e];
    const float* w_e = c.w.data() + e * weight_size;
    cpu::linear_forward(c.y.data() + begin * out_dim, c.x.data() + begin * in_dim, w_e, nullptr, count, in_dim,
                        out_dim);
    cpu::linear_backward(c.dx.data() + begin * in_dim, c.dw.data() + e * weight_size, nullptr,
                         c.dy.data() + begin * out_dim, c.x.data() + begin * in_dim, w_e, count, in_dim, out_dim);
  }
  return c;
}

constexpr float kSentinel = -3.5f;  // exact in bf16
constexpr int kPaddingRows = 5;     // rows past offsets[E] in y and dx that must stay untouched

// The case on the device; y and dx have kPaddingRows extra rows filled with kSentinel, dw starts as dw_init.
struct DeviceCase {
  DeviceBuffer<int32_t> offsets;
  DeviceBuffer<bf16> x, w, dy, y, dx, dw;
  explicit DeviceCase(const ExpertCase& c)
      : offsets(c.offsets),
        x(to_device_bf16(c.x)),
        w(to_device_bf16(c.w)),
        dy(to_device_bf16(c.dy)),
        y(to_device_bf16(std::vector<float>(static_cast<size_t>(c.rows + kPaddingRows) * c.out_dim, kSentinel))),
        dx(to_device_bf16(std::vector<float>(static_cast<size_t>(c.rows + kPaddingRows) * c.in_dim, kSentinel))),
        dw(to_device_bf16(c.dw_init)) {}
};

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

std::vector<float> slice(const std::vector<float>& v, size_t begin, size_t end) {
  return std::vector<float>(v.begin() + begin, v.begin() + end);
}

uint16_t bits(bf16 value) {
  uint16_t b;
  std::memcpy(&b, &value, sizeof(b));
  return b;
}

// Whole-output and per-expert relative errors (per expert so that a failure names the expert), untouched padding
// rows, and bit-identical C[e] for empty experts.
void expect_matches_cpu(const ExpertCase& c, DeviceCase& d, const std::string& label) {
  const size_t weight_size = static_cast<size_t>(c.out_dim) * c.in_dim;
  const std::vector<float> y_all = to_host_f32(d.y), dx_all = to_host_f32(d.dx), dw = to_host_f32(d.dw);
  const std::vector<float> y = slice(y_all, 0, c.y.size()), dx = slice(dx_all, 0, c.dx.size());
  const double err_nt = relative_norm_error(y, c.y), err_nn = relative_norm_error(dx, c.dx);
  const double err_tn = relative_norm_error(dw, c.dw);
  std::printf("[grouped gemm] %s: E=%d rows=%d in=%d out=%d  rel. error NT %.2e  NN %.2e  TN %.2e\n", label.c_str(),
              c.experts, c.rows, c.in_dim, c.out_dim, err_nt, err_nn, err_tn);
  EXPECT_LE(err_nt, kBf16RoundTrip) << label << " kNT (forward)";
  EXPECT_LE(err_nn, kBf16RoundTrip) << label << " kNN (data gradient)";
  EXPECT_LE(err_tn, kBf16RoundTrip) << label << " kTN (weight gradient)";

  for (int e = 0; e < c.experts; ++e) {
    const size_t begin = c.offsets[e], end = c.offsets[e + 1];
    const int count = static_cast<int>(end - begin);
    if (count > 0) {
      EXPECT_LE(relative_norm_error(slice(y, begin * c.out_dim, end * c.out_dim),
                                    slice(c.y, begin * c.out_dim, end * c.out_dim)),
                kBf16RoundTrip)
          << label << " kNT expert " << e << " (" << count << " rows)";
      EXPECT_LE(relative_norm_error(slice(dx, begin * c.in_dim, end * c.in_dim),
                                    slice(c.dx, begin * c.in_dim, end * c.in_dim)),
                kBf16RoundTrip)
          << label << " kNN expert " << e << " (" << count << " rows)";
      EXPECT_LE(relative_norm_error(slice(dw, e * weight_size, (e + 1) * weight_size),
                                    slice(c.dw, e * weight_size, (e + 1) * weight_size)),
                kBf16RoundTrip)
          << label << " kTN expert " << e << " (" << count << " rows)";
    }
  }

  // Rows past offsets[E] keep the sentinel.
  int touched = 0;
  for (size_t i = c.y.size(); i < y_all.size(); ++i) touched += y_all[i] != kSentinel;
  for (size_t i = c.dx.size(); i < dx_all.size(); ++i) touched += dx_all[i] != kSentinel;
  EXPECT_EQ(touched, 0) << label << ": kNT/kNN wrote past offsets[E]";

  // C[e] of an expert without rows is bit-identical to before.
  const std::vector<bf16> dw_raw = d.dw.download();
  for (int e = 0; e < c.experts; ++e) {
    if (c.offsets[e + 1] != c.offsets[e]) continue;
    int changed = 0;
    for (size_t i = e * weight_size; i < (e + 1) * weight_size; ++i)
      changed += bits(dw_raw[i]) != f32_to_bf16(c.dw_init[i]);
    EXPECT_EQ(changed, 0) << label << " kTN changed C[" << e << "] of an expert with 0 rows";
  }
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

// A realistic expert shape (Qwen3-like hidden 2048 -> 2I = 1536), ~2000 uneven rows over 16 experts.
const std::vector<int> kRealisticCounts = {129, 0, 1, 200, 64, 127, 256, 97, 131, 150, 33, 180, 90, 250, 128, 166};
constexpr int kRealisticIn = 2048, kRealisticOut = 1536;

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
  const auto same = [](const DeviceBuffer<bf16>& a, const DeviceBuffer<bf16>& b) {
    const std::vector<bf16> ha = a.download(), hb = b.download();
    return ha.size() == hb.size() && std::memcmp(ha.data(), hb.data(), ha.size() * sizeof(bf16)) == 0;
  };
  EXPECT_TRUE(same(first.y, second.y)) << "kNT";
  EXPECT_TRUE(same(first.dx, second.dx)) << "kNN";
  EXPECT_TRUE(same(first.dw, second.dw)) << "kTN";
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

// Fills a large device buffer by repeating 1 Mi random bf16 values (the values do not matter for timing).
void fill_pattern(DeviceBuffer<bf16>& buffer, uint64_t seed, float scale) {
  const std::vector<float> pattern = random_floats(size_t{1} << 20, seed, scale);
  std::vector<bf16> converted(pattern.size());
  for (size_t i = 0; i < pattern.size(); ++i) converted[i] = __float2bfloat16(pattern[i]);
  for (size_t done = 0; done < buffer.size(); done += converted.size()) {
    const size_t count = std::min(converted.size(), buffer.size() - done);
    CUDA_CHECK(cudaMemcpy(buffer.data() + done, converted.data(), count * sizeof(bf16), cudaMemcpyHostToDevice));
  }
}

template <class Run>
double time_ms(const Run& run) {
  for (int i = 0; i < 2; ++i) run();  // warm-up
  cudaEvent_t start, stop;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  constexpr int kReps = 10;
  CUDA_CHECK(cudaEventRecord(start, nullptr));
  for (int i = 0; i < kReps; ++i) run();
  CUDA_CHECK(cudaEventRecord(stop, nullptr));
  CUDA_CHECK(cudaEventSynchronize(stop));
  float ms = 0.0f;
  CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
  CUDA_CHECK(cudaEventDestroy(start));
  CUDA_CHECK(cudaEventDestroy(stop));
  return ms / kReps;
}

// Qwen3-30B-A3B experts: E = 128, 4096 tokens x top-8 = 32768 rows (uneven, two experts empty), H = 2048, I = 768;
// gate_up W (E, 1536, 2048), down W (E, 2048, 768). Prints ms and TFLOP/s for this kernel and cuBLAS's grouped path.
TEST(CudaGroupedGemmTiming, Qwen3ExpertShapes) {
  SKIP_WITHOUT_GPU();
  constexpr int kExperts = 128, kRows = 32768, kHidden = 2048, kInter = 768, kGateUp = 2 * kInter;
  std::mt19937_64 generator(81);
  std::normal_distribution<double> skew(0.0, 0.5);
  std::vector<double> popularity(kExperts);
  for (double& p : popularity) p = std::exp(skew(generator));
  popularity[5] = popularity[77] = 0.0;
  std::discrete_distribution<int> pick(popularity.begin(), popularity.end());
  std::vector<int> counts(kExperts, 0);
  for (int i = 0; i < kRows; ++i) ++counts[pick(generator)];
  const std::vector<int32_t> offsets = offsets_from_counts(counts);
  const DeviceBuffer<int32_t> offsets_d(offsets);
  std::printf("[grouped gemm timing] E=%d rows=%d, rows per expert %d..%d\n", kExperts, kRows,
              *std::min_element(counts.begin(), counts.end()), *std::max_element(counts.begin(), counts.end()));

  DeviceBuffer<bf16> x(size_t{kRows} * kHidden), h(size_t{kRows} * kGateUp), act(size_t{kRows} * kInter),
      out(size_t{kRows} * kHidden), d_h(size_t{kRows} * kGateUp), d_out(size_t{kRows} * kHidden),
      w_gate_up(size_t{kExperts} * kGateUp * kHidden), w_down(size_t{kExperts} * kHidden * kInter),
      dw_gate_up(w_gate_up.size()), dw_down(w_down.size()), scratch_h(h.size()), scratch_x(x.size()),
      scratch_act(act.size());
  fill_pattern(x, 1, 1.0f);
  fill_pattern(act, 2, 1.0f);
  fill_pattern(d_h, 3, 0.01f);
  fill_pattern(d_out, 4, 0.01f);
  fill_pattern(w_gate_up, 5, 0.02f);
  fill_pattern(w_down, 6, 0.02f);
  dw_gate_up.zero();
  dw_down.zero();

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
  const double fwd_gu = ours(GroupedLayout::kNT, kHidden, kGateUp, x.data(), w_gate_up.data(), h.data());
  const double fwd_gu_cublas = time_ms(
      [&] { gemm.grouped_linear_forward(scratch_h.data(), x.data(), w_gate_up.data(), offsets, kHidden, kGateUp); });
  row("gate_up fwd  NT (rows,2048)->1536", kHidden, kGateUp, fwd_gu, fwd_gu_cublas);
  const double fwd_down = ours(GroupedLayout::kNT, kInter, kHidden, act.data(), w_down.data(), out.data());
  const double fwd_down_cublas = time_ms(
      [&] { gemm.grouped_linear_forward(scratch_x.data(), act.data(), w_down.data(), offsets, kInter, kHidden); });
  row("down    fwd  NT (rows,768)->2048", kInter, kHidden, fwd_down, fwd_down_cublas);
  CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_LE(relative_norm_error(to_host_f32(h), to_host_f32(scratch_h)), kBf16RoundTrip) << "gate_up forward vs cuBLAS";
  EXPECT_LE(relative_norm_error(to_host_f32(out), to_host_f32(scratch_x)), kBf16RoundTrip) << "down forward vs cuBLAS";

  // Backward: data gradients (kNN) and weight gradients (kTN). cuBLAS's path only runs them together (dgrad + wgrad)
  // or wgrad alone, so its dgrad time is the difference.
  const double dgrad_gu = ours(GroupedLayout::kNN, kGateUp, kHidden, d_h.data(), w_gate_up.data(), scratch_x.data());
  const double wgrad_gu = ours(GroupedLayout::kTN, kGateUp, kHidden, d_h.data(), x.data(), dw_gate_up.data());
  const double bwd_gu_cublas = time_ms([&] {
    gemm.grouped_linear_backward(scratch_x.data(), dw_gate_up.data(), d_h.data(), x.data(), w_gate_up.data(), offsets,
                                 kHidden, kGateUp);
  });
  const double wgrad_gu_cublas = time_ms([&] {
    gemm.grouped_linear_backward(nullptr, dw_gate_up.data(), d_h.data(), x.data(), w_gate_up.data(), offsets, kHidden,
                                 kGateUp);
  });
  row("gate_up dgrad NN (rows,1536)->2048", kGateUp, kHidden, dgrad_gu, bwd_gu_cublas - wgrad_gu_cublas);
  row("gate_up wgrad TN (E,1536,2048)+=", kGateUp, kHidden, wgrad_gu, wgrad_gu_cublas);

  const double dgrad_down = ours(GroupedLayout::kNN, kHidden, kInter, d_out.data(), w_down.data(), scratch_act.data());
  const double wgrad_down = ours(GroupedLayout::kTN, kHidden, kInter, d_out.data(), act.data(), dw_down.data());
  const double bwd_down_cublas = time_ms([&] {
    gemm.grouped_linear_backward(scratch_act.data(), dw_down.data(), d_out.data(), act.data(), w_down.data(), offsets,
                                 kInter, kHidden);
  });
  const double wgrad_down_cublas = time_ms([&] {
    gemm.grouped_linear_backward(nullptr, dw_down.data(), d_out.data(), act.data(), w_down.data(), offsets, kInter,
                                 kHidden);
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
