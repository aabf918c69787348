// Why: the expert-projection cases shared by the two grouped GEMM tests (the portable kernel, ops/cuda/grouped_gemm.h,
// and the Hopper one, ops/cuda/grouped_gemm_sm90.h): random bf16 operands, the CPU twin's results, the device copies
// with sentinel rows past the last expert, the checks every kernel must pass, and the timing helpers.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "ops/cpu/linear.h"
#include "ops/cuda/grouped_gemm.h"

namespace moetune::testing {

using cuda::bf16;
using cuda::DeviceBuffer;
using cuda::GroupedLayout;

inline std::vector<int32_t> offsets_from_counts(const std::vector<int>& counts) {
  std::vector<int32_t> offsets(counts.size() + 1, 0);
  for (size_t e = 0; e < counts.size(); ++e) offsets[e + 1] = offsets[e] + counts[e];
  return offsets;
}

// One expert projection W (E, out_dim, in_dim) on x (rows, in_dim) with upstream gradient dy (rows, out_dim), all
// bf16-rounded, and (with_reference) the CPU results of its three grouped products:
// y = x_e · W[e]^T (kNT), dx = dy_e · W[e] (kNN), dw = dw_init + dy_e^T · x_e (kTN), dw_product = dy_e^T · x_e
// (kTNWrite; zeros for experts with no rows).
struct ExpertCase {
  int experts = 0, in_dim = 0, out_dim = 0, rows = 0;
  std::vector<int32_t> offsets;
  std::vector<float> x, w, dy, dw_init;
  std::vector<float> y, dx, dw, dw_product;
};

inline ExpertCase make_case(const std::vector<int>& counts, int in_dim, int out_dim, uint64_t seed, bool with_reference) {
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
  c.dw_product.assign(c.dw.size(), 0.0f);
  for (int e = 0; e < c.experts; ++e) {
    const size_t begin = c.offsets[e];
    const int count = c.offsets[e + 1] - c.offsets[e];
    const float* w_e = c.w.data() + e * weight_size;
    cpu::linear_forward(c.y.data() + begin * out_dim, c.x.data() + begin * in_dim, w_e, nullptr, count, in_dim,
                        out_dim);
    cpu::linear_backward(c.dx.data() + begin * in_dim, c.dw.data() + e * weight_size, nullptr,
                         c.dy.data() + begin * out_dim, c.x.data() + begin * in_dim, w_e, count, in_dim, out_dim);
    cpu::linear_backward(nullptr, c.dw_product.data() + e * weight_size, nullptr,
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

inline std::vector<float> slice(const std::vector<float>& v, size_t begin, size_t end) {
  return std::vector<float>(v.begin() + begin, v.begin() + end);
}

inline uint16_t bits(bf16 value) {
  uint16_t b;
  std::memcpy(&b, &value, sizeof(b));
  return b;
}

// Whole-output and per-expert relative errors (per expert so that a failure names the expert), untouched padding
// rows, and bit-identical C[e] for empty experts.
inline void expect_matches_cpu(const ExpertCase& c, DeviceCase& d, const std::string& label) {
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

// Stale gradient memory for kTNWrite: NaNs, so that any read of C (even scaled by 0) shows in the result.
inline void fill_with_nan(DeviceBuffer<bf16>& buffer) {
  buffer.upload(std::vector<bf16>(buffer.size(), __float2bfloat16(std::nanf(""))));
}

// kTNWrite's output `dw` (filled by fill_with_nan before the call): the product alone, per expert (so a failure names
// the expert), and exact zeros for experts with no rows.
inline void expect_weight_gradient_written(const ExpertCase& c, const DeviceBuffer<bf16>& dw_device,
                                           const std::string& label) {
  const size_t weight_size = static_cast<size_t>(c.out_dim) * c.in_dim;
  const std::vector<float> dw = to_host_f32(dw_device);
  const double error = relative_norm_error(dw, c.dw_product);
  std::printf("[grouped gemm] %s kTNWrite: rel. error %.2e\n", label.c_str(), error);
  EXPECT_LE(error, kBf16RoundTrip) << label << " kTNWrite";
  for (int e = 0; e < c.experts; ++e) {
    const std::vector<float> got = slice(dw, e * weight_size, (e + 1) * weight_size);
    if (c.offsets[e + 1] == c.offsets[e]) {
      EXPECT_EQ(std::count(got.begin(), got.end(), 0.0f), static_cast<long>(weight_size))
          << label << " kTNWrite left C[" << e << "] of an expert with 0 rows non-zero";
    } else {
      EXPECT_LE(relative_norm_error(got, slice(c.dw_product, e * weight_size, (e + 1) * weight_size)), kBf16RoundTrip)
          << label << " kTNWrite expert " << e;
    }
  }
}

// Whether two device buffers hold the same bits.
inline bool same_bits(const DeviceBuffer<bf16>& a, const DeviceBuffer<bf16>& b) {
  const std::vector<bf16> ha = a.download(), hb = b.download();
  return ha.size() == hb.size() && std::memcmp(ha.data(), hb.data(), ha.size() * sizeof(bf16)) == 0;
}

// The three outputs of two runs of the same case are bit for bit the same.
inline void expect_bitwise_same(const DeviceCase& first, const DeviceCase& second) {
  EXPECT_TRUE(same_bits(first.y, second.y)) << "kNT";
  EXPECT_TRUE(same_bits(first.dx, second.dx)) << "kNN";
  EXPECT_TRUE(same_bits(first.dw, second.dw)) << "kTN";
}

// A realistic expert shape (Qwen3-like hidden 2048 -> 2I = 1536), ~2000 uneven rows over 16 experts.
inline const std::vector<int> kRealisticCounts = {129, 0, 1, 200, 64, 127, 256, 97, 131, 150, 33, 180, 90, 250, 128, 166};
constexpr int kRealisticIn = 2048, kRealisticOut = 1536;

// kTNWrite through `run` (the backend's call on the case's dw, which holds NaNs) on two cases: empty first, last and
// inner experts with a K tail, and the realistic shape.
template <class Run>
void check_weight_gradient_write(const std::string& backend, const Run& run) {
  const std::vector<std::vector<int>> counts = {{0, 300, 1, 63, 0}, kRealisticCounts};
  const int in_dims[] = {192, kRealisticIn}, out_dims[] = {128, kRealisticOut};
  for (int i = 0; i < 2; ++i) {
    const ExpertCase c = make_case(counts[i], in_dims[i], out_dims[i], 61 + i, true);
    DeviceCase d(c);
    fill_with_nan(d.dw);
    run(c, d);
    CUDA_CHECK(cudaDeviceSynchronize());
    expect_weight_gradient_written(c, d.dw, backend + " E=" + std::to_string(c.experts));
  }
}

// Fills a large device buffer by repeating 1 Mi random bf16 values (the values do not matter for timing).
inline void fill_pattern(DeviceBuffer<bf16>& buffer, uint64_t seed, float scale) {
  const std::vector<float> pattern = random_floats(size_t{1} << 20, seed, scale);
  std::vector<bf16> converted(pattern.size());
  for (size_t i = 0; i < pattern.size(); ++i) converted[i] = __float2bfloat16(pattern[i]);
  for (size_t done = 0; done < buffer.size(); done += converted.size()) {
    const size_t count = std::min(converted.size(), buffer.size() - done);
    CUDA_CHECK(cudaMemcpy(buffer.data() + done, converted.data(), count * sizeof(bf16), cudaMemcpyHostToDevice));
  }
}

// Uneven rows per expert as a trained router produces them (log-normal popularity, experts 5 and 77 empty).
inline std::vector<int> qwen3_expert_counts(int experts, int rows) {
  std::mt19937_64 generator(81);
  std::normal_distribution<double> skew(0.0, 0.5);
  std::vector<double> popularity(experts);
  for (double& p : popularity) p = std::exp(skew(generator));
  popularity[5] = popularity[77] = 0.0;
  std::discrete_distribution<int> pick(popularity.begin(), popularity.end());
  std::vector<int> counts(experts, 0);
  for (int i = 0; i < rows; ++i) ++counts[pick(generator)];
  return counts;
}

// The Qwen3-30B-A3B expert shapes of the timing tests (E = 128, 32,768 rows, H = 2048, I = 768): the uneven rows per
// expert (qwen3_expert_counts) and their offsets, activations, upstream gradients, weights (gate_up (E, 2I, H), down
// (E, H, I)) filled with a repeated random pattern, and zeroed weight gradients.
struct Qwen3ExpertBuffers {
  static constexpr int kExperts = 128, kRows = 32768, kHidden = 2048, kInter = 768, kGateUp = 2 * kInter;
  const std::vector<int> counts = qwen3_expert_counts(kExperts, kRows);
  const std::vector<int32_t> host_offsets = offsets_from_counts(counts);
  const DeviceBuffer<int32_t> offsets{host_offsets};
  DeviceBuffer<bf16> x{size_t{kRows} * kHidden}, h{size_t{kRows} * kGateUp}, act{size_t{kRows} * kInter},
      out{size_t{kRows} * kHidden}, d_h{size_t{kRows} * kGateUp}, d_out{size_t{kRows} * kHidden},
      w_gate_up{size_t{kExperts} * kGateUp * kHidden}, w_down{size_t{kExperts} * kHidden * kInter},
      dw_gate_up{w_gate_up.size()}, dw_down{w_down.size()};
  Qwen3ExpertBuffers() {
    fill_pattern(x, 1, 1.0f);
    fill_pattern(act, 2, 1.0f);
    fill_pattern(d_h, 3, 0.01f);
    fill_pattern(d_out, 4, 0.01f);
    fill_pattern(w_gate_up, 5, 0.02f);
    fill_pattern(w_down, 6, 0.02f);
    dw_gate_up.zero();
    dw_down.zero();
  }
};

template <class Run>
inline double time_ms(const Run& run) {
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

}  // namespace moetune::testing
