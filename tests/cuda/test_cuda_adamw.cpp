// Why: the optimizer step touches every parameter, so a wrong span walk or a reordered formula corrupts training
// silently. The GPU step over a flat buffer with several spans (decay on and off, gaps between spans, spans crossing
// the kernel's tiles, one tiny span) is held to the CPU twin applied span by span: the fp32-master variant to 1e-6
// norm-wise (the same formula in fp32; fused multiply-adds and the hardware's sqrt and reciprocal differ by a few
// ulp), its bf16 copy to the rounded master exactly, the all-bf16 variant to one bf16 rounding (kBf16RoundTrip), gaps
// untouched. The gradient norm is held to the CPU's double sum at 1e-5 and must repeat bit for bit. A timing test
// prints the step's bandwidth beside a device copy of the same traffic.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "cuda_test_util.h"
#include "ops/cpu/adamw.h"
#include "ops/cuda/adamw.h"

namespace moetune::testing {
namespace {

constexpr size_t kTotal = 10000;
const std::vector<cuda::AdamWSpan> kSpans = {
    {0, 3000, true}, {3000, 17, false}, {3100, 4000, true}, {7100, 1, false}, {7101, 2800, false}};  // gap 3017..3100, 9901..
const cpu::AdamWHyper kHyper{1e-2, 0.9, 0.95, 1e-8, 0.1, 3};
constexpr float kGradScale = 0.5f;

struct State {
  std::vector<float> params, grads, m, v;
};

State initial_state() {
  State s{round_to_bf16(random_floats(kTotal, 1)), round_to_bf16(random_floats(kTotal, 2, 0.1f)),
          round_to_bf16(random_floats(kTotal, 3, 0.01f)), random_floats(kTotal, 4, 1e-3f)};
  for (float& x : s.v) x = x * x;  // second moments are non-negative
  s.v = round_to_bf16(s.v);
  return s;
}

// The CPU twin span by span on a copy: grads scaled first (as clipping does), then the update.
State cpu_step(State s) {
  cpu::scale_in_place(s.grads.data(), kTotal, kGradScale);
  for (const cuda::AdamWSpan& span : kSpans)
    cpu::adamw_update(s.params.data() + span.offset, s.grads.data() + span.offset, s.m.data() + span.offset,
                      s.v.data() + span.offset, span.count, kHyper, span.decay);
  return s;
}

bool in_span(size_t i) {
  for (const cuda::AdamWSpan& span : kSpans)
    if (i >= span.offset && i < span.offset + span.count) return true;
  return false;
}

TEST(CudaAdamW, MasterMatchesCpu) {
  SKIP_WITHOUT_GPU();
  const State start = initial_state(), expected = cpu_step(start);
  cuda::DeviceBuffer<float> master_d(start.params), m_d(start.m), v_d(start.v);
  auto params_d = to_device_bf16(start.params), grads_d = to_device_bf16(start.grads);
  const cuda::AdamWPlan plan(kSpans, kTotal);
  cuda::adamw_master(params_d.data(), master_d.data(), grads_d.data(), m_d.data(), v_d.data(), plan, kHyper, kGradScale,
                     nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<float> master = master_d.download(), params = to_host_f32(params_d);
  EXPECT_LT(relative_norm_error(master, expected.params), 1e-6);
  EXPECT_LT(relative_norm_error(m_d.download(), expected.m), 1e-6);
  EXPECT_LT(relative_norm_error(v_d.download(), expected.v), 1e-6);
  EXPECT_EQ(round_to_bf16(master), params);
  for (size_t i = 0; i < kTotal; ++i)
    if (!in_span(i)) {
      ASSERT_EQ(master[i], start.params[i]) << "element " << i << " lies in no span";
    }
}

TEST(CudaAdamW, Bf16MatchesCpu) {
  SKIP_WITHOUT_GPU();
  const State start = initial_state(), expected = cpu_step(start);
  auto params_d = to_device_bf16(start.params), grads_d = to_device_bf16(start.grads), m_d = to_device_bf16(start.m),
       v_d = to_device_bf16(start.v);
  const cuda::AdamWPlan plan(kSpans, kTotal);
  cuda::adamw_bf16(params_d.data(), grads_d.data(), m_d.data(), v_d.data(), plan, kHyper, kGradScale, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<float> params = to_host_f32(params_d);
  EXPECT_LT(relative_norm_error(params, expected.params), kBf16RoundTrip);
  EXPECT_LT(relative_norm_error(to_host_f32(m_d), expected.m), kBf16RoundTrip);
  EXPECT_LT(relative_norm_error(to_host_f32(v_d), expected.v), kBf16RoundTrip);
  for (size_t i = 0; i < kTotal; ++i)
    if (!in_span(i)) {
      ASSERT_EQ(params[i], start.params[i]) << "element " << i << " lies in no span";
    }
}

TEST(CudaAdamW, GradNormMatchesCpuAndRepeats) {
  SKIP_WITHOUT_GPU();
  cuda::DeviceBuffer<float> scratch(cuda::grad_norm_scratch_floats()), result_d(1);
  for (size_t count : {size_t(0), size_t(5), size_t(1000003), size_t(4) << 20}) {
    SCOPED_TRACE(::testing::Message() << "count " << count);
    const std::vector<float> grads = round_to_bf16(random_floats(count, 5, 0.01f));
    const double expected = cpu::grad_norm_squared(grads.data(), count);
    auto grads_bf16_d = to_device_bf16(grads);
    cuda::DeviceBuffer<float> grads_f32_d(grads);
    float first = 0.0f;
    for (int run = 0; run < 2; ++run) {
      cuda::grad_norm_squared(grads_bf16_d.data(), count, result_d.data(), scratch.data(), nullptr);
      const float got = result_d.download()[0];
      EXPECT_NEAR(got, expected, 1e-5 * expected);
      if (run == 0) {
        first = got;
      } else {
        EXPECT_EQ(std::memcmp(&got, &first, sizeof(float)), 0) << "bf16 run differs";
      }
    }
    cuda::grad_norm_squared(grads_f32_d.data(), count, result_d.data(), scratch.data(), nullptr);
    EXPECT_NEAR(result_d.download()[0], expected, 1e-5 * expected);
  }
}

// The all-bf16 step over 1.5 G elements (a quarter of the Qwen3-30B-A3B slice) in one span: it moves 14 bytes per
// element (reads parameter, gradient and both moments, writes parameter and moments); the device-to-device copy of the
// same traffic is its roofline. Prints only.
TEST(CudaAdamWTiming, Bf16StepBandwidth) {
  SKIP_WITHOUT_GPU();
  constexpr size_t kElements = size_t{1536} << 20;
  cuda::DeviceBuffer<cuda::bf16> params(kElements), grads(kElements), m(kElements), v(kElements);
  for (auto* buffer : {&params, &grads, &m, &v}) buffer->zero();
  const cuda::AdamWPlan plan({{0, kElements, true}}, kElements);
  cudaEvent_t start, stop;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  const auto time_ms = [&](const auto& run) {
    run();
    CUDA_CHECK(cudaEventRecord(start, nullptr));
    for (int i = 0; i < 5; ++i) run();
    CUDA_CHECK(cudaEventRecord(stop, nullptr));
    CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0.0f;
    CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    return ms / 5.0;
  };
  const double step_ms = time_ms([&] {
    cuda::adamw_bf16(params.data(), grads.data(), m.data(), v.data(), plan, kHyper, 1.0f, nullptr);
  });
  // 7 bytes per element copied = 14 bytes of traffic: m into params, v into grads, params into m (2 bytes each), then
  // half of grads into v.
  const size_t full = kElements * sizeof(cuda::bf16);
  const double copy_ms = time_ms([&] {
    CUDA_CHECK(cudaMemcpyAsync(params.data(), m.data(), full, cudaMemcpyDeviceToDevice, nullptr));
    CUDA_CHECK(cudaMemcpyAsync(grads.data(), v.data(), full, cudaMemcpyDeviceToDevice, nullptr));
    CUDA_CHECK(cudaMemcpyAsync(m.data(), params.data(), full, cudaMemcpyDeviceToDevice, nullptr));
    CUDA_CHECK(cudaMemcpyAsync(v.data(), grads.data(), full / 2, cudaMemcpyDeviceToDevice, nullptr));
  });
  CUDA_CHECK(cudaEventDestroy(start));
  CUDA_CHECK(cudaEventDestroy(stop));
  const double bytes = 14.0 * static_cast<double>(kElements);
  std::printf("[adamw timing] bf16 step over %zu elements: %.2f ms, %.2f TB/s | device copy of the same traffic %.2f ms, "
              "%.2f TB/s\n", kElements, step_ms, bytes / (step_ms * 1e-3) / 1e12, copy_ms, bytes / (copy_ms * 1e-3) / 1e12);
}

}  // namespace
}  // namespace moetune::testing
