// Why: shared helpers of the GPU-vs-CPU op tests: skip when no GPU is present (CI), move fp32 host data to and from
// bf16 device buffers, and measure errors against the CPU twin with bf16-appropriate tolerances.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "ops/cuda/device_buffer.h"

namespace moetune::testing {

inline bool gpu_available() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

#define SKIP_WITHOUT_GPU() \
  if (!::moetune::testing::gpu_available()) GTEST_SKIP() << "no CUDA device"

inline std::vector<float> random_floats(size_t count, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 generator(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> values(count);
  for (float& v : values) v = normal(generator);
  return values;
}

// Rounds to bf16 and back, so the CPU reference sees exactly the inputs the GPU sees.
inline std::vector<float> round_to_bf16(std::vector<float> values) {
  for (float& v : values) v = bf16_to_f32(f32_to_bf16(v));
  return values;
}

inline cuda::DeviceBuffer<cuda::bf16> to_device_bf16(const std::vector<float>& host) {
  std::vector<cuda::bf16> converted(host.size());
  for (size_t i = 0; i < host.size(); ++i) converted[i] = __float2bfloat16(host[i]);
  return cuda::DeviceBuffer<cuda::bf16>(converted);
}

inline std::vector<float> to_host_f32(const cuda::DeviceBuffer<cuda::bf16>& device) {
  const std::vector<cuda::bf16> raw = device.download();
  std::vector<float> out(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) out[i] = __bfloat162float(raw[i]);
  return out;
}

// ||a - b|| / ||b||
inline double relative_norm_error(const std::vector<float>& actual, const std::vector<float>& expected) {
  double diff = 0.0, ref = 0.0;
  for (size_t i = 0; i < expected.size(); ++i) {
    diff += (static_cast<double>(actual[i]) - expected[i]) * (static_cast<double>(actual[i]) - expected[i]);
    ref += static_cast<double>(expected[i]) * expected[i];
  }
  return ref > 0 ? std::sqrt(diff / ref) : std::sqrt(diff);
}

// Index of the first element whose bits differ (or 0 on a size mismatch), -1 when the two are identical. Used instead
// of comparing whole vectors so that a failure prints one index, not millions of values.
template <class T>
long first_difference(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0) return static_cast<long>(i);
  return -1;
}

// Tolerances for bf16 outputs (8 bits of mantissa: one rounding is ~2^-9 relative).
constexpr double kBf16RoundTrip = 8e-3;   // a value computed in fp32 and stored once in bf16
constexpr double kBf16Chain = 2e-2;       // a result whose inputs were themselves bf16-rounded intermediates

}  // namespace moetune::testing
