// Why: the embedding lookup is a copy and its gradient a scatter-add that the GPU performs in the CPU twin's order, so
// both are held to the CPU twin exactly (bit for bit): hidden sizes on the vector path (8, 2048) and off it (13, 130),
// token counts that leave a partial batch of 16, few distinct ids (many duplicates inside one batch), a padding row that
// must receive nothing, and an accumulating (non-zero) d_table.
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

TEST(CudaEmbedding, BackwardMatchesCpuExactly) {
  SKIP_WITHOUT_GPU();
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << "tokens " << s.tokens << ", V " << s.vocab << ", H " << s.hidden
                                      << ", padding " << s.padding_idx);
    const std::vector<float> d_out = round_to_bf16(random_floats(size_t(s.tokens) * s.hidden, 3)),
                             d_table_before = random_floats(size_t(s.vocab) * s.hidden, 4);
    const std::vector<int32_t> ids = random_ids(s.tokens, s.vocab, 5);
    std::vector<float> d_table = d_table_before;
    cpu::embedding_backward(d_table.data(), d_out.data(), ids.data(), s.tokens, s.hidden, s.padding_idx);

    auto d_out_d = to_device_bf16(d_out);
    cuda::DeviceBuffer<int32_t> ids_d(ids);
    std::vector<std::vector<float>> runs;
    for (int run = 0; run < 2; ++run) {
      cuda::DeviceBuffer<float> d_table_d(d_table_before);
      cuda::embedding_backward(d_table_d.data(), d_out_d.data(), ids_d.data(), s.tokens, s.hidden, s.padding_idx,
                               nullptr);
      CUDA_CHECK(cudaDeviceSynchronize());
      runs.push_back(d_table_d.download());
    }
    EXPECT_EQ(first_difference(runs[0], d_table), -1) << "same additions in the same order as the CPU twin";
    EXPECT_EQ(first_difference(runs[1], runs[0]), -1);
  }
}

}  // namespace
}  // namespace moetune::testing
