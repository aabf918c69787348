// Why: a misrouted row is silent (the loss still goes down), so the GPU routing must equal the CPU twin's index map
// exactly, and the gather / combine / backward ops are checked three ways: against the CPU twin's MoE forward and
// backward (bf16 tolerances), exactly with DeepEP-style rows that carry their token id (a row from the wrong token or
// slot shows up as a wrong value), and bitwise across two runs. Routings include experts that get no token, k = 1, 2,
// 8, E = 8, 64, 128, hidden sizes with and without the 16-byte vector path.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "cuda_test_util.h"
#include "ops/cpu/moe_experts.h"
#include "ops/cuda/moe_permute.h"

namespace moetune::testing {
namespace {

struct PermuteCase {
  int tokens, experts, top_k, hidden;
};

// hidden % 8 != 0 (100, 36) takes the scalar path.
const PermuteCase kCases[] = {{4096, 8, 2, 64},    {4096, 64, 8, 128}, {2000, 128, 1, 64},
                              {1500, 128, 8, 256}, {333, 64, 2, 100},  {700, 8, 8, 36}};

// k distinct experts per token. Experts e % 4 == 3 are never picked when the others suffice (so some experts get no
// token), and a quarter of the tokens pick the same first k experts (a hot spot).
std::vector<int32_t> random_top_index(const PermuteCase& c, uint64_t seed) {
  std::mt19937_64 generator(seed);
  std::vector<int32_t> allowed;
  for (int e = 0; e < c.experts; ++e)
    if (e % 4 != 3) allowed.push_back(e);
  if (static_cast<int>(allowed.size()) < c.top_k) {
    allowed.resize(c.experts);
    std::iota(allowed.begin(), allowed.end(), 0);
  }
  std::vector<int32_t> top_index(static_cast<size_t>(c.tokens) * c.top_k);
  for (int t = 0; t < c.tokens; ++t) {
    std::vector<int32_t> pool = allowed;
    if (generator() % 4 != 0)
      for (int j = 0; j < c.top_k; ++j)  // partial Fisher-Yates
        std::swap(pool[j], pool[j + generator() % (pool.size() - j)]);
    std::copy(pool.begin(), pool.begin() + c.top_k, top_index.begin() + static_cast<size_t>(t) * c.top_k);
  }
  return top_index;
}

struct HostRouting {
  std::vector<int32_t> offsets, row_token, row_slot, token_slot_row;
};

HostRouting cpu_routing(const std::vector<int32_t>& top_index, const PermuteCase& c) {
  const size_t rows = static_cast<size_t>(c.tokens) * c.top_k;
  HostRouting h{std::vector<int32_t>(c.experts + 1), std::vector<int32_t>(rows), std::vector<int32_t>(rows),
                std::vector<int32_t>(rows)};
  cpu::MoeRouting routing{h.offsets.data(), h.row_token.data(), h.row_slot.data()};
  cpu::moe_build_routing(routing, top_index.data(), cpu::MoeShape{c.tokens, c.hidden, c.experts, 16, c.top_k});
  for (size_t r = 0; r < rows; ++r)
    h.token_slot_row[static_cast<size_t>(h.row_token[r]) * c.top_k + h.row_slot[r]] = static_cast<int32_t>(r);
  return h;
}

struct DeviceRouting {
  cuda::DeviceBuffer<int32_t> offsets, row_token, row_slot, token_slot_row;
  HostRouting download() const {
    return {offsets.download(), row_token.download(), row_slot.download(), token_slot_row.download()};
  }
};

DeviceRouting gpu_routing(const cuda::DeviceBuffer<int32_t>& top_index, const PermuteCase& c) {
  const size_t rows = static_cast<size_t>(c.tokens) * c.top_k;
  DeviceRouting d{cuda::DeviceBuffer<int32_t>(c.experts + 1), cuda::DeviceBuffer<int32_t>(rows),
                  cuda::DeviceBuffer<int32_t>(rows), cuda::DeviceBuffer<int32_t>(rows)};
  cuda::DeviceBuffer<uint8_t> scratch(cuda::moe_routing_scratch_bytes(c.tokens, c.experts, c.top_k));
  cuda::moe_build_routing(d.offsets.data(), d.row_token.data(), d.row_slot.data(), d.token_slot_row.data(),
                          top_index.data(), c.tokens, c.experts, c.top_k, scratch.data(), nullptr);
  return d;
}

// How many elements differ (gtest would print every element of a large vector).
template <class T>
size_t mismatches(const std::vector<T>& got, const std::vector<T>& want) {
  if (got.size() != want.size()) return std::max(got.size(), want.size());
  size_t count = 0;
  for (size_t i = 0; i < want.size(); ++i) count += !(got[i] == want[i]);
  return count;
}

::testing::Message describe(const PermuteCase& c) {
  return ::testing::Message() << "N=" << c.tokens << " E=" << c.experts << " k=" << c.top_k << " H=" << c.hidden;
}

TEST(CudaMoePermute, RoutingIsIdenticalToCpuTwin) {
  SKIP_WITHOUT_GPU();
  uint64_t seed = 500;
  for (const PermuteCase& c : kCases) {
    SCOPED_TRACE(describe(c));
    const std::vector<int32_t> top_index = random_top_index(c, ++seed);
    const HostRouting want = cpu_routing(top_index, c);
    const HostRouting got = gpu_routing(cuda::DeviceBuffer<int32_t>(top_index), c).download();
    EXPECT_EQ(mismatches(got.offsets, want.offsets), 0u);
    EXPECT_EQ(mismatches(got.row_token, want.row_token), 0u);
    EXPECT_EQ(mismatches(got.row_slot, want.row_slot), 0u);
    EXPECT_EQ(mismatches(got.token_slot_row, want.token_slot_row), 0u);
    if (c.experts > c.top_k) {
      int empty = 0;
      for (int e = 0; e < c.experts; ++e) empty += want.offsets[e + 1] == want.offsets[e];
      EXPECT_GT(empty, 0) << "the case should include experts with no token";
    }
  }
}

TEST(CudaMoePermute, OpsMatchCpuTwin) {
  SKIP_WITHOUT_GPU();
  uint64_t seed = 600;
  constexpr int kInter = 16;
  for (const PermuteCase& c : kCases) {
    SCOPED_TRACE(describe(c));
    const cpu::MoeShape s{c.tokens, c.hidden, c.experts, kInter, c.top_k};
    const size_t rows = s.rows(), H = c.hidden, I = kInter;
    const std::vector<int32_t> top_index = random_top_index(c, ++seed);
    const std::vector<float> x = round_to_bf16(random_floats(c.tokens * H, ++seed));
    std::vector<float> top_weight = random_floats(rows, ++seed);
    for (float& w : top_weight) w = std::fabs(w);
    const std::vector<float> w_gate_up = random_floats(c.experts * 2 * I * H, ++seed, 0.1f);
    const std::vector<float> w_down = random_floats(c.experts * H * I, ++seed, 0.1f);
    const std::vector<float> d_out = round_to_bf16(random_floats(c.tokens * H, ++seed));

    // The CPU twin: routing, forward, backward (d_x accumulates, so it starts at zero).
    HostRouting routing = cpu_routing(top_index, c);
    const cpu::MoeRouting cpu_map{routing.offsets.data(), routing.row_token.data(), routing.row_slot.data()};
    std::vector<float> gathered(rows * H), gate_up(rows * 2 * I), act(rows * I), expert_out(rows * H),
        out(c.tokens * H);
    cpu::MoeSaved saved{gathered.data(), gate_up.data(), act.data(), expert_out.data()};
    cpu::moe_experts_forward(out.data(), saved, x.data(), top_weight.data(), cpu_map, w_gate_up.data(), w_down.data(),
                             s);
    std::vector<float> d_x(c.tokens * H, 0.0f), d_top_weight(rows), d_w_gate_up(w_gate_up.size(), 0.0f),
        d_w_down(w_down.size(), 0.0f), d_rows(rows * H), d_act(rows * I), d_gate_up(rows * 2 * I);
    cpu::MoeScratch scratch{d_rows.data(), d_act.data(), d_gate_up.data()};
    cpu::moe_experts_backward(d_x.data(), d_top_weight.data(), d_w_gate_up.data(), d_w_down.data(), scratch,
                              d_out.data(), saved, top_weight.data(), cpu_map, w_gate_up.data(), w_down.data(), s);

    // The GPU ops, fed the twin's expert outputs and input-row gradients (rounded to bf16).
    const DeviceRouting map = gpu_routing(cuda::DeviceBuffer<int32_t>(top_index), c);
    cuda::DeviceBuffer<cuda::bf16> x_dev = to_device_bf16(x), rows_dev(rows * H), out_dev(c.tokens * H);
    cuda::moe_gather(rows_dev.data(), x_dev.data(), map.row_token.data(), rows, c.hidden, nullptr);
    EXPECT_EQ(mismatches(to_host_f32(rows_dev), gathered), 0u);  // a copy: exact

    cuda::DeviceBuffer<cuda::bf16> expert_out_dev = to_device_bf16(expert_out);
    cuda::DeviceBuffer<float> top_weight_dev(top_weight);
    cuda::moe_combine_forward(out_dev.data(), expert_out_dev.data(), top_weight_dev.data(), map.token_slot_row.data(),
                              c.tokens, c.hidden, c.top_k, nullptr);
    EXPECT_LT(relative_norm_error(to_host_f32(out_dev), out), kBf16Chain);

    cuda::DeviceBuffer<cuda::bf16> d_out_dev = to_device_bf16(d_out), d_expert_out_dev(rows * H);
    cuda::DeviceBuffer<float> d_top_weight_dev(std::vector<float>(rows, NAN));  // must be overwritten
    cuda::moe_combine_backward(d_expert_out_dev.data(), d_top_weight_dev.data(), d_out_dev.data(),
                               expert_out_dev.data(), top_weight_dev.data(), map.row_token.data(), map.row_slot.data(),
                               rows, c.hidden, c.top_k, nullptr);
    EXPECT_LT(relative_norm_error(d_top_weight_dev.download(), d_top_weight), kBf16Chain);
    std::vector<float> want_d_expert_out(rows * H);  // w * d_out[token], the twin's first backward step
    for (size_t r = 0; r < rows; ++r) {
      const size_t t = routing.row_token[r];
      const float w = top_weight[t * c.top_k + routing.row_slot[r]];
      for (size_t h = 0; h < H; ++h) want_d_expert_out[r * H + h] = w * d_out[t * H + h];
    }
    EXPECT_LT(relative_norm_error(to_host_f32(d_expert_out_dev), want_d_expert_out), kBf16RoundTrip);

    cuda::DeviceBuffer<cuda::bf16> d_rows_dev = to_device_bf16(d_rows), d_x_dev(c.tokens * H);
    cuda::moe_scatter_add_backward(d_x_dev.data(), d_rows_dev.data(), map.token_slot_row.data(), c.tokens, c.hidden,
                                   c.top_k, nullptr);
    EXPECT_LT(relative_norm_error(to_host_f32(d_x_dev), d_x), kBf16Chain);
  }
}

// Small integers are exact in bf16 (up to 256) and their sums and power-of-two multiples in fp32: a token's row holds
// its id as (t & 255, t >> 8) on even / odd columns, so every value of every output is known exactly.
float token_code(int t, size_t h) { return static_cast<float>(h % 2 == 0 ? (t & 255) : (t >> 8)); }

TEST(CudaMoePermute, TokenIdRowsRouteExactly) {
  SKIP_WITHOUT_GPU();
  uint64_t seed = 700;
  for (const PermuteCase& c : kCases) {
    SCOPED_TRACE(describe(c));
    ASSERT_TRUE(c.top_k == 1 || c.top_k == 2 || c.top_k == 8);  // 1/k and k must be powers of two
    const size_t rows = static_cast<size_t>(c.tokens) * c.top_k, H = c.hidden;
    const std::vector<int32_t> top_index = random_top_index(c, ++seed);
    const HostRouting want = cpu_routing(top_index, c);
    std::vector<float> x(c.tokens * H);
    for (int t = 0; t < c.tokens; ++t)
      for (size_t h = 0; h < H; ++h) x[t * H + h] = token_code(t, h);
    const float inv_k = 1.0f / c.top_k;

    const DeviceRouting map = gpu_routing(cuda::DeviceBuffer<int32_t>(top_index), c);
    cuda::DeviceBuffer<cuda::bf16> x_dev = to_device_bf16(x), gathered(rows * H), out(c.tokens * H);
    cuda::DeviceBuffer<cuda::bf16> d_rows(rows * H), d_x(c.tokens * H);
    cuda::DeviceBuffer<float> weights(std::vector<float>(rows, inv_k)), d_weights(rows);
    cuda::moe_gather(gathered.data(), x_dev.data(), map.row_token.data(), rows, c.hidden, nullptr);
    cuda::moe_combine_forward(out.data(), gathered.data(), weights.data(), map.token_slot_row.data(), c.tokens,
                              c.hidden, c.top_k, nullptr);
    cuda::moe_combine_backward(d_rows.data(), d_weights.data(), x_dev.data(), gathered.data(), weights.data(),
                               map.row_token.data(), map.row_slot.data(), rows, c.hidden, c.top_k, nullptr);
    cuda::moe_scatter_add_backward(d_x.data(), gathered.data(), map.token_slot_row.data(), c.tokens, c.hidden, c.top_k,
                                   nullptr);

    const std::vector<float> got_rows = to_host_f32(gathered), got_out = to_host_f32(out);
    const std::vector<float> got_d_rows = to_host_f32(d_rows), got_d_x = to_host_f32(d_x);
    const std::vector<float> got_d_weights = d_weights.download();
    size_t bad_rows = 0, bad_out = 0, bad_d_rows = 0, bad_d_x = 0, bad_d_weights = 0;
    for (size_t r = 0; r < rows; ++r) {
      const int t = want.row_token[r];
      for (size_t h = 0; h < H; ++h) {
        bad_rows += got_rows[r * H + h] != token_code(t, h);
        bad_d_rows += got_d_rows[r * H + h] != token_code(t, h) * inv_k;
      }
    }
    for (int t = 0; t < c.tokens; ++t) {
      float norm2 = 0.0f;  // dot(x[t], x[t]): exact, an integer below 2^24
      for (size_t h = 0; h < H; ++h) {
        bad_out += got_out[t * H + h] != token_code(t, h);  // the k weights 1/k add up to 1
        bad_d_x += got_d_x[t * H + h] != token_code(t, h) * c.top_k;
        norm2 += token_code(t, h) * token_code(t, h);
      }
      for (int j = 0; j < c.top_k; ++j) bad_d_weights += got_d_weights[static_cast<size_t>(t) * c.top_k + j] != norm2;
    }
    EXPECT_EQ(bad_rows, 0u) << "gathered rows from the wrong token";
    EXPECT_EQ(bad_out, 0u) << "combined rows from the wrong token";
    EXPECT_EQ(bad_d_rows, 0u) << "row gradients from the wrong token";
    EXPECT_EQ(bad_d_x, 0u) << "token gradients from the wrong rows";
    EXPECT_EQ(bad_d_weights, 0u) << "weight gradients of the wrong (token, slot)";
  }
}

TEST(CudaMoePermute, RunsAreBitwiseIdentical) {
  SKIP_WITHOUT_GPU();
  for (const PermuteCase& c : {PermuteCase{4096, 128, 8, 256}, PermuteCase{333, 64, 2, 100}}) {
    SCOPED_TRACE(describe(c));
    const size_t rows = static_cast<size_t>(c.tokens) * c.top_k, H = c.hidden;
    const cuda::DeviceBuffer<int32_t> top_index(random_top_index(c, 800));
    const cuda::DeviceBuffer<cuda::bf16> x = to_device_bf16(random_floats(c.tokens * H, 801));
    const cuda::DeviceBuffer<cuda::bf16> expert_out = to_device_bf16(random_floats(rows * H, 802));
    const cuda::DeviceBuffer<cuda::bf16> d_out = to_device_bf16(random_floats(c.tokens * H, 803));
    const cuda::DeviceBuffer<float> weights(random_floats(rows, 804));
    std::vector<std::vector<uint8_t>> first;
    for (int run = 0; run < 2; ++run) {
      const DeviceRouting map = gpu_routing(top_index, c);
      cuda::DeviceBuffer<cuda::bf16> gathered(rows * H), out(c.tokens * H), d_expert_out(rows * H), d_x(c.tokens * H);
      cuda::DeviceBuffer<float> d_weights(rows);
      cuda::moe_gather(gathered.data(), x.data(), map.row_token.data(), rows, c.hidden, nullptr);
      cuda::moe_combine_forward(out.data(), expert_out.data(), weights.data(), map.token_slot_row.data(), c.tokens,
                                c.hidden, c.top_k, nullptr);
      cuda::moe_combine_backward(d_expert_out.data(), d_weights.data(), d_out.data(), expert_out.data(), weights.data(),
                                 map.row_token.data(), map.row_slot.data(), rows, c.hidden, c.top_k, nullptr);
      cuda::moe_scatter_add_backward(d_x.data(), d_expert_out.data(), map.token_slot_row.data(), c.tokens, c.hidden,
                                     c.top_k, nullptr);
      std::vector<std::vector<uint8_t>> bytes;
      auto keep = [&bytes](const auto& buffer) {
        const auto host = buffer.download();
        const auto* begin = reinterpret_cast<const uint8_t*>(host.data());
        bytes.emplace_back(begin, begin + host.size() * sizeof(host[0]));
      };
      keep(map.offsets), keep(map.row_token), keep(map.row_slot), keep(map.token_slot_row);
      keep(gathered), keep(out), keep(d_expert_out), keep(d_weights), keep(d_x);
      if (run == 0) {
        first = std::move(bytes);
        continue;
      }
      ASSERT_EQ(bytes.size(), first.size());
      for (size_t i = 0; i < bytes.size(); ++i) EXPECT_TRUE(bytes[i] == first[i]) << "output " << i << " differs";
    }
  }
}

}  // namespace
}  // namespace moetune::testing
