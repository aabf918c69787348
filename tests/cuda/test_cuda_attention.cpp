// Why: cuDNN flash attention (forward and backward) against the CPU twin ops/cpu/attention, for GQA, plain multi-head,
// a sliding window, head_dim 128 and the tiny test sizes.
#include <cmath>
#include <vector>

#include "cuda_test_util.h"
#include "ops/cpu/attention.h"
#include "ops/cuda/attention.h"

namespace moetune::testing {
namespace {

void check_attention(int batch, int seq, int heads, int kv_heads, int head_dim, int window) {
  const cpu::AttentionShape shape{batch, seq, heads, kv_heads, head_dim, window, 1.0f / std::sqrt(static_cast<float>(head_dim))};
  const size_t q_size = static_cast<size_t>(batch) * seq * heads * head_dim;
  const size_t kv_size = static_cast<size_t>(batch) * seq * kv_heads * head_dim;
  const auto q = round_to_bf16(random_floats(q_size, 11)), k = round_to_bf16(random_floats(kv_size, 12));
  const auto v = round_to_bf16(random_floats(kv_size, 13)), d_out = round_to_bf16(random_floats(q_size, 14));
  std::vector<float> out(q_size), probs(static_cast<size_t>(batch) * heads * seq * seq), dq(q_size), dk(kv_size), dv(kv_size);
  cpu::attention_forward(out.data(), probs.data(), q.data(), k.data(), v.data(), shape);
  cpu::attention_backward(dq.data(), dk.data(), dv.data(), d_out.data(), q.data(), k.data(), v.data(), probs.data(), shape);

  cuda::Attention attention(nullptr);
  auto q_d = to_device_bf16(q), k_d = to_device_bf16(k), v_d = to_device_bf16(v), do_d = to_device_bf16(d_out);
  auto out_d = to_device_bf16(std::vector<float>(q_size)), dq_d = to_device_bf16(std::vector<float>(q_size));
  auto dk_d = to_device_bf16(std::vector<float>(kv_size)), dv_d = to_device_bf16(std::vector<float>(kv_size));
  cuda::DeviceBuffer<float> stats(static_cast<size_t>(batch) * heads * seq);
  attention.forward(out_d.data(), stats.data(), q_d.data(), k_d.data(), v_d.data(), shape);
  attention.backward(dq_d.data(), dk_d.data(), dv_d.data(), do_d.data(), q_d.data(), k_d.data(), v_d.data(), out_d.data(),
                     stats.data(), shape);
  CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_LE(relative_norm_error(to_host_f32(out_d), out), kBf16RoundTrip) << "out";
  EXPECT_LE(relative_norm_error(to_host_f32(dq_d), dq), kBf16Chain) << "d_q";
  EXPECT_LE(relative_norm_error(to_host_f32(dk_d), dk), kBf16Chain) << "d_k";
  EXPECT_LE(relative_norm_error(to_host_f32(dv_d), dv), kBf16Chain) << "d_v";
}

TEST(CudaAttention, GroupedQueryHeadDim128) {
  SKIP_WITHOUT_GPU();
  check_attention(2, 128, 8, 2, 128, 0);
}

TEST(CudaAttention, MultiHeadTinyHeadDim) {
  SKIP_WITHOUT_GPU();
  check_attention(2, 64, 4, 4, 32, 0);
}

TEST(CudaAttention, SlidingWindow) {
  SKIP_WITHOUT_GPU();
  check_attention(1, 96, 4, 2, 64, 16);
}

}  // namespace
}  // namespace moetune::testing
