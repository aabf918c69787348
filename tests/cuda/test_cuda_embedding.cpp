// Why: the embedding lookup is a copy and its gradient a scatter-add that the GPU performs in the CPU twin's order, so
// both are held to the CPU twin exactly (bit for bit): hidden sizes on the vector path (8, 2048) and off it (13, 130),
// few distinct ids (long runs of duplicates), a padding row that must receive nothing, and an accumulating table.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "cuda_test_util.h"
#include "ops/cpu/embedding.h"
#include "ops/cuda/embedding.h"

namespace moetune::testing {
namespace {

struct Shape {
  int tokens, vocab, hidden, padding_idx;
};
const Shape kShapes[] = {{1, 3, 8, -1}, {37, 50, 13, -1}, {1000, 7, 130, 3}, {4097, 1000, 2048, 0}, {300, 2, 8, -1}};

std::vector<int32_t> random_ids(int tokens, int vocab, uint64_t seed) {
  std::mt19937_64 generator(seed);
  std::uniform_int_distribution<int32_t> id(0, vocab - 1);
  std::vector<int32_t> ids(tokens);
  for (int32_t& v : ids) v = id(generator);
  return ids;
}

TEST(CudaEmbedding, ForwardMatchesCpu) {
  SKIP_WITHOUT_GPU();
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << "tokens " << s.tokens << ", V " << s.vocab << ", H " << s.hidden);
    const std::vector<float> table = round_to_bf16(random_floats(size_t(s.vocab) * s.hidden, 1));
    const std::vector<int32_t> ids = random_ids(s.tokens, s.vocab, 2);
    std::vector<float> out(size_t(s.tokens) * s.hidden);
    cpu::embedding_forward(out.data(), ids.data(), table.data(), s.tokens, s.hidden);

    auto table_d = to_device_bf16(table);
    cuda::DeviceBuffer<int32_t> ids_d(ids);
    cuda::DeviceBuffer<cuda::bf16> out_d(out.size());
    cuda::embedding_forward(out_d.data(), ids_d.data(), table_d.data(), s.tokens, s.hidden, nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    EXPECT_EQ(first_difference(to_host_f32(out_d), out), -1);
  }
}

// From a zero table the GPU's per-id fp32 sum in token order is the CPU twin's sum exactly; both round once to bf16.
TEST(CudaEmbedding, BackwardMatchesCpuExactly) {
  SKIP_WITHOUT_GPU();
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << "tokens " << s.tokens << ", V " << s.vocab << ", H " << s.hidden
                                      << ", padding " << s.padding_idx);
    const std::vector<float> d_out = round_to_bf16(random_floats(size_t(s.tokens) * s.hidden, 3));
    const std::vector<int32_t> ids = random_ids(s.tokens, s.vocab, 5);
    std::vector<float> d_table(size_t(s.vocab) * s.hidden, 0.0f);
    cpu::embedding_backward(d_table.data(), d_out.data(), ids.data(), s.tokens, s.hidden, s.padding_idx);
    d_table = round_to_bf16(d_table);
    auto d_out_d = to_device_bf16(d_out);
    cuda::DeviceBuffer<int32_t> ids_d(ids);
    cuda::DeviceBuffer<char> scratch(cuda::embedding_backward_scratch_bytes(s.tokens));
    std::vector<std::vector<float>> runs;
    for (int run = 0; run < 2; ++run) {
      auto d_table_d = to_device_bf16(std::vector<float>(d_table.size(), 0.0f));
      cuda::embedding_backward(d_table_d.data(), d_out_d.data(), ids_d.data(), s.tokens, s.hidden, s.padding_idx,
                               scratch.data(), nullptr);
      CUDA_CHECK(cudaDeviceSynchronize());
      runs.push_back(to_host_f32(d_table_d));
    }
    EXPECT_EQ(first_difference(runs[0], d_table), -1) << "same additions in the same order as the CPU twin";
    EXPECT_EQ(first_difference(runs[1], runs[0]), -1);
  }
}

// Into a non-zero table: each touched row gets its run sum added once (bf16 rounding of old + sum).
TEST(CudaEmbedding, BackwardAccumulatesIntoTable) {
  SKIP_WITHOUT_GPU();
  const Shape s{1000, 7, 130, 3};
  const std::vector<float> d_out = round_to_bf16(random_floats(size_t(s.tokens) * s.hidden, 6));
  const std::vector<float> before = round_to_bf16(random_floats(size_t(s.vocab) * s.hidden, 7));
  const std::vector<int32_t> ids = random_ids(s.tokens, s.vocab, 8);
  std::vector<float> sums(before.size(), 0.0f);
  cpu::embedding_backward(sums.data(), d_out.data(), ids.data(), s.tokens, s.hidden, s.padding_idx);
  std::vector<float> expected(before.size());
  for (size_t i = 0; i < before.size(); ++i) expected[i] = bf16_to_f32(f32_to_bf16(before[i] + sums[i]));
  auto d_out_d = to_device_bf16(d_out), table_d = to_device_bf16(before);
  cuda::DeviceBuffer<int32_t> ids_d(ids);
  cuda::DeviceBuffer<char> scratch(cuda::embedding_backward_scratch_bytes(s.tokens));
  cuda::embedding_backward(table_d.data(), d_out_d.data(), ids_d.data(), s.tokens, s.hidden, s.padding_idx,
                           scratch.data(), nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_EQ(first_difference(to_host_f32(table_d), expected), -1);
}

}  // namespace
}  // namespace moetune::testing
