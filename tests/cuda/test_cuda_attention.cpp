// Why: cuDNN flash attention (forward and backward) against the CPU twin ops/cpu/attention, for GQA, plain multi-head,
// a sliding window, head_dim 128 and the tiny test sizes. Packed rows (the ragged path) against the CPU twin with
// doc_start: several documents per row, length-1 documents at a row start and inside it, a padding tail, a row that is
// one document, GQA, with and without a window, fewer documents than the prepared slots (unused slots) and exactly as
// many; and a packed row against each of its documents attended alone (the unpacked GPU path for lengths >= 2; a
// length-1 document has an exact answer: out = v, d_v = the sum of its group's d_out, d_q = d_k = 0, held to 1e-3 of
// the scale of the values, far below what attending to another document would change).
#include <cmath>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "ops/cpu/attention.h"
#include "ops/cpu/document_offsets.h"
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

// doc_start (B, T) of rows made of documents of the given lengths; what a row's lengths leave is one more document
// (the padding tail), as dataset/sequence_sampler writes it.
std::vector<int32_t> doc_start_of(const std::vector<std::vector<int>>& rows, int seq) {
  std::vector<int32_t> starts;
  for (const std::vector<int>& lengths : rows) {
    int at = 0;
    for (int length : lengths) {
      for (int t = 0; t < length; ++t) starts.push_back(at);
      at += length;
    }
    for (int t = at; t < seq; ++t) starts.push_back(at);
  }
  return starts;
}

struct PackedCase {
  cpu::AttentionShape shape;
  std::vector<float> q, k, v, d_out;
  std::vector<int32_t> doc_start, offsets;  // (B, T); (documents + 1)
};

PackedCase packed_case(int seq, int heads, int kv_heads, int head_dim, int window, const std::vector<std::vector<int>>& rows) {
  const int batch = static_cast<int>(rows.size());
  PackedCase c;
  c.shape = {batch, seq, heads, kv_heads, head_dim, window, 1.0f / std::sqrt(static_cast<float>(head_dim))};
  const size_t q_size = static_cast<size_t>(batch) * seq * heads * head_dim;
  const size_t kv_size = static_cast<size_t>(batch) * seq * kv_heads * head_dim;
  c.q = round_to_bf16(random_floats(q_size, 21));
  c.k = round_to_bf16(random_floats(kv_size, 22));
  c.v = round_to_bf16(random_floats(kv_size, 23));
  c.d_out = round_to_bf16(random_floats(q_size, 24));
  c.doc_start = doc_start_of(rows, seq);
  c.offsets = cpu::document_offsets(c.doc_start.data(), batch, seq);
  return c;
}

struct GpuResult {
  std::vector<float> out, d_q, d_k, d_v;
};

// Runs the packed GPU path, prepared for max_docs documents.
GpuResult run_packed(const PackedCase& c, int max_docs) {
  const size_t q_size = c.q.size(), kv_size = c.k.size();
  cuda::Attention attention(nullptr);
  attention.prepare_packed(c.shape, max_docs);
  auto q_d = to_device_bf16(c.q), k_d = to_device_bf16(c.k), v_d = to_device_bf16(c.v), do_d = to_device_bf16(c.d_out);
  auto out_d = to_device_bf16(std::vector<float>(q_size)), dq_d = to_device_bf16(std::vector<float>(q_size));
  auto dk_d = to_device_bf16(std::vector<float>(kv_size)), dv_d = to_device_bf16(std::vector<float>(kv_size));
  cuda::DeviceBuffer<float> stats(static_cast<size_t>(c.shape.batch) * c.shape.heads * c.shape.seq_len);
  cuda::DeviceBuffer<int32_t> offsets(c.offsets);
  const cuda::Documents docs{offsets.data(), static_cast<int>(c.offsets.size()) - 1};
  attention.forward_packed(out_d.data(), stats.data(), q_d.data(), k_d.data(), v_d.data(), c.shape, docs);
  attention.backward_packed(dq_d.data(), dk_d.data(), dv_d.data(), do_d.data(), q_d.data(), k_d.data(), v_d.data(),
                            out_d.data(), stats.data(), c.shape, docs);
  CUDA_CHECK(cudaDeviceSynchronize());
  return {to_host_f32(out_d), to_host_f32(dq_d), to_host_f32(dk_d), to_host_f32(dv_d)};
}

void check_packed(int seq, int heads, int kv_heads, int head_dim, int window, const std::vector<std::vector<int>>& rows,
                  int max_docs) {
  const PackedCase c = packed_case(seq, heads, kv_heads, head_dim, window, rows);
  const cpu::AttentionShape& s = c.shape;
  std::vector<float> out(c.q.size()), probs(static_cast<size_t>(s.batch) * heads * seq * seq), dq(c.q.size());
  std::vector<float> dk(c.k.size()), dv(c.k.size());
  cpu::attention_forward(out.data(), probs.data(), c.q.data(), c.k.data(), c.v.data(), s, c.doc_start.data());
  cpu::attention_backward(dq.data(), dk.data(), dv.data(), c.d_out.data(), c.q.data(), c.k.data(), c.v.data(),
                          probs.data(), s, c.doc_start.data());
  const GpuResult gpu = run_packed(c, max_docs);
  EXPECT_LE(relative_norm_error(gpu.out, out), kBf16RoundTrip) << "out";
  EXPECT_LE(relative_norm_error(gpu.d_q, dq), kBf16Chain) << "d_q";
  EXPECT_LE(relative_norm_error(gpu.d_k, dk), kBf16Chain) << "d_k";
  EXPECT_LE(relative_norm_error(gpu.d_v, dv), kBf16Chain) << "d_v";
}

// Rows of tokens [first, first + count) of a (tokens, width) tensor.
std::vector<float> token_slice(const std::vector<float>& x, int first, int count, int width) {
  return std::vector<float>(x.begin() + static_cast<long>(first) * width, x.begin() + static_cast<long>(first + count) * width);
}

double norm(const std::vector<float>& x) {
  double sum = 0.0;
  for (float value : x) sum += static_cast<double>(value) * value;
  return std::sqrt(sum);
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

// 10 documents in 3 rows; prepared for up to 36 (graphs of 3, 6, 12, 24 and 36 slots), so the run uses the 12-slot
// graph with 2 slots unused.
TEST(CudaAttention, PackedGroupedQueryHeadDim128) {
  SKIP_WITHOUT_GPU();
  check_packed(128, 8, 2, 128, 0, {{1, 37, 1, 50, 39}, {64, 1, 20}, {128}}, 36);
}

// 11 documents (padding tails included), prepared for exactly 11: the last slot count (11) is used in full. Plain
// multi-head.
TEST(CudaAttention, PackedMultiHeadAllSlotsUsed) {
  SKIP_WITHOUT_GPU();
  check_packed(64, 4, 4, 32, 0, {{1, 1, 30, 2}, {10, 10, 10, 10, 10}}, 11);
}

// Documents longer than the window and shorter than it.
TEST(CudaAttention, PackedSlidingWindow) {
  SKIP_WITHOUT_GPU();
  check_packed(96, 4, 2, 64, 16, {{40, 1, 9, 30}, {5, 70}}, 16);
}

// Each document of a packed batch gives what it gives attended alone.
TEST(CudaAttention, PackedRowEqualsDocumentsAlone) {
  SKIP_WITHOUT_GPU();
  const int seq = 128, heads = 8, kv_heads = 2, head_dim = 64, group = heads / kv_heads;
  const PackedCase c = packed_case(seq, heads, kv_heads, head_dim, 0, {{1, 37, 1, 50, 39}, {64, 1, 20}});
  const GpuResult packed = run_packed(c, 16);
  const int q_width = heads * head_dim, kv_width = kv_heads * head_dim;
  cuda::Attention attention(nullptr);
  for (size_t d = 0; d + 1 < c.offsets.size(); ++d) {
    const int first = c.offsets[d], length = c.offsets[d + 1] - first;
    const std::string where = "document " + std::to_string(d) + " (tokens " + std::to_string(first) + ", length " +
                              std::to_string(length) + ")";
    const std::vector<float> out = token_slice(packed.out, first, length, q_width);
    const std::vector<float> d_q = token_slice(packed.d_q, first, length, q_width);
    const std::vector<float> d_k = token_slice(packed.d_k, first, length, kv_width);
    const std::vector<float> d_v = token_slice(packed.d_v, first, length, kv_width);
    const std::vector<float> v = token_slice(c.v, first, length, kv_width);
    const std::vector<float> d_out = token_slice(c.d_out, first, length, q_width);
    if (length == 1) {
      std::vector<float> expected_out(q_width), expected_dv(kv_width, 0.0f);
      for (int h = 0; h < heads; ++h)
        for (int i = 0; i < head_dim; ++i) {
          expected_out[h * head_dim + i] = v[(h / group) * head_dim + i];
          expected_dv[(h / group) * head_dim + i] += d_out[h * head_dim + i];
        }
      EXPECT_LE(relative_norm_error(out, expected_out), 1e-3) << where << ": out must equal v";
      EXPECT_LE(relative_norm_error(d_v, expected_dv), kBf16RoundTrip) << where << ": d_v";
      EXPECT_LE(norm(d_q), 1e-3 * norm(d_out)) << where << ": d_q must vanish";
      EXPECT_LE(norm(d_k), 1e-3 * norm(d_out)) << where << ": d_k must vanish";
      continue;
    }
    const cpu::AttentionShape alone{1, length, heads, kv_heads, head_dim, 0, c.shape.scale};
    auto q_d = to_device_bf16(token_slice(c.q, first, length, q_width));
    auto k_d = to_device_bf16(token_slice(c.k, first, length, kv_width)), v_d = to_device_bf16(v);
    auto do_d = to_device_bf16(d_out), out_d = to_device_bf16(std::vector<float>(out.size()));
    auto dq_d = to_device_bf16(std::vector<float>(d_q.size())), dk_d = to_device_bf16(std::vector<float>(d_k.size()));
    auto dv_d = to_device_bf16(std::vector<float>(d_v.size()));
    cuda::DeviceBuffer<float> stats(static_cast<size_t>(heads) * length);
    attention.forward(out_d.data(), stats.data(), q_d.data(), k_d.data(), v_d.data(), alone);
    attention.backward(dq_d.data(), dk_d.data(), dv_d.data(), do_d.data(), q_d.data(), k_d.data(), v_d.data(),
                       out_d.data(), stats.data(), alone);
    CUDA_CHECK(cudaDeviceSynchronize());
    EXPECT_LE(relative_norm_error(out, to_host_f32(out_d)), kBf16RoundTrip) << where << ": out";
    EXPECT_LE(relative_norm_error(d_q, to_host_f32(dq_d)), kBf16Chain) << where << ": d_q";
    EXPECT_LE(relative_norm_error(d_k, to_host_f32(dk_d)), kBf16Chain) << where << ": d_k";
    EXPECT_LE(relative_norm_error(d_v, to_host_f32(dv_d)), kBf16Chain) << where << ": d_v";
  }
}

// Calls outside what was prepared are errors, not silent out-of-bounds reads.
TEST(CudaAttention, PackedNeedsPreparedDocumentCount) {
  SKIP_WITHOUT_GPU();
  const PackedCase c = packed_case(64, 4, 2, 64, 0, {{30, 34}, {64}});
  cuda::Attention attention(nullptr);
  cuda::DeviceBuffer<cuda::bf16> q(c.q.size()), k(c.k.size()), v(c.k.size()), out(c.q.size());
  cuda::DeviceBuffer<float> stats(static_cast<size_t>(2) * 4 * 64);
  cuda::DeviceBuffer<int32_t> offsets(c.offsets);
  const cuda::Documents docs{offsets.data(), 3};
  EXPECT_THROW(attention.forward_packed(out.data(), stats.data(), q.data(), k.data(), v.data(), c.shape, docs), Error);
  EXPECT_THROW(attention.prepare_packed(c.shape, 1), Error);  // fewer than one document per row
  attention.prepare_packed(c.shape, 2);
  EXPECT_THROW(attention.forward_packed(out.data(), stats.data(), q.data(), k.data(), v.data(), c.shape, docs), Error);
}

}  // namespace
}  // namespace moetune::testing
