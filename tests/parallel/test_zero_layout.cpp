// Why: with ZeRO-1 each element of the model is stepped by exactly one rank of those sharing it (or, in a segment's
// short tail, by all of them alike), and its optimizer state lives at one place of that rank's state arena. An element
// stepped twice, by no one, with the wrong decay, or a norm part counted twice would train silently wrong, and a
// boundary off by a few elements would break NCCL's in-place collectives or the AdamW kernels' 16-byte accesses. All of
// it is host arithmetic, checked here exactly: one layout worked by hand, then every rank of real layouts (dense, MoE,
// shared expert, expert shards) for several group sizes.
#include <gtest/gtest.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>

#include "core/error.h"
#include "model/config.h"
#include "model/weights.h"
#include "parallel/expert_shard.h"
#include "parallel/zero_layout.h"

namespace moetune::testing {
namespace {

using parallel::kZeroAlign;
using parallel::ZeroLayout;
using parallel::ZeroParam;
using parallel::ZeroPart;
using parallel::ZeroSegment;

std::string error_of(const std::function<void()>& body) {
  try {
    body();
  } catch (const Error& error) {
    return error.what();
  }
  return "";
}

void expect_span(const ZeroPart& part, size_t index, size_t offset, size_t count, bool decay) {
  ASSERT_LT(index, part.spans.size());
  EXPECT_EQ(part.spans[index].offset, offset) << "span " << index;
  EXPECT_EQ(part.spans[index].count, count) << "span " << index;
  EXPECT_EQ(part.spans[index].decay, decay) << "span " << index;
}

TEST(ZeroLayout, HandWorkedSegmentsBodiesAndTails) {
  // Group 0: A, B replicated, C an expert tensor; group 1: D (a norm).
  const std::vector<ZeroParam> params = {{0, 100, true, 0, false},
                                         {104, 300, false, 0, false},
                                         {408, 1000, true, 0, true},
                                         {1408, 10, false, 1, false}};
  for (int rank : {0, 1}) {
    SCOPED_TRACE(rank);
    const ZeroLayout layout = parallel::zero_layout(params, 2, rank, 2, rank);
    ASSERT_EQ(layout.segments.size(), 3u);
    // [0, 404): 404 / 2 = 202, down to 192; body [0, 384), tail [384, 404).
    const ZeroSegment& a = layout.segments[0];
    EXPECT_EQ(a.start, 0u);
    EXPECT_EQ(a.end, 404u);
    EXPECT_EQ(a.shard, 192u);
    EXPECT_EQ(a.own.begin, rank * 192u);
    EXPECT_EQ(a.own.end, rank * 192u + 192u);
    EXPECT_EQ(a.own.state, 0u);
    if (rank == 0) {
      ASSERT_EQ(a.own.spans.size(), 2u);
      expect_span(a.own, 0, 0, 100, true);
      expect_span(a.own, 1, 104, 88, false);
    } else {
      ASSERT_EQ(a.own.spans.size(), 1u);
      expect_span(a.own, 0, 0, 192, false);
    }
    EXPECT_EQ(a.tail.begin, 384u);
    EXPECT_EQ(a.tail.end, 404u);
    EXPECT_EQ(a.tail.state, 192u);
    ASSERT_EQ(a.tail.spans.size(), 1u);
    expect_span(a.tail, 0, 0, 20, false);
    EXPECT_EQ(a.counts_tail(), rank == 0);
    // [408, 1408) over the expert replicas: 500 down to 448; tail [1304, 1408).
    const ZeroSegment& c = layout.segments[1];
    EXPECT_TRUE(c.expert);
    EXPECT_EQ(c.shard, 448u);
    EXPECT_EQ(c.own.begin, 408u + rank * 448u);
    EXPECT_EQ(c.own.state, 256u);
    EXPECT_EQ(c.tail.begin, 1304u);
    EXPECT_EQ(c.tail.count(), 104u);
    EXPECT_EQ(c.tail.state, 256u + 448u);
    // [1408, 1418): too small to split, all tail.
    const ZeroSegment& d = layout.segments[2];
    EXPECT_EQ(d.group, 1);
    EXPECT_EQ(d.shard, 0u);
    EXPECT_EQ(d.own.count(), 0u);
    EXPECT_EQ(d.tail.begin, 1408u);
    EXPECT_EQ(d.tail.count(), 10u);
    EXPECT_EQ(layout.state_elements, 256u + 448u + 128u + 64u);
  }
  // One rank: every segment is all body.
  const ZeroLayout alone = parallel::zero_layout(params, 1, 0, 1, 0);
  for (const ZeroSegment& s : alone.segments) {
    EXPECT_EQ(s.own.begin, s.start);
    EXPECT_EQ(s.own.end, s.end);
    EXPECT_EQ(s.tail.count(), 0u);
  }
}

TEST(ZeroLayout, RefusesOverlapsAndBadRanks) {
  EXPECT_NE(error_of([] { parallel::zero_layout({{0, 10, false, 0, false}, {8, 4, false, 0, false}}, 1, 0, 1, 0); })
                .find("overlaps"),
            std::string::npos);
  EXPECT_NE(error_of([] { parallel::zero_layout({}, 2, 2, 1, 0); }).find("rank 2 of a world of 2"), std::string::npos);
  EXPECT_NE(error_of([] { parallel::zero_layout({}, 2, 0, 0, 0); }).find("0 expert replicas"), std::string::npos);
}

ModelConfig shared_expert_config() {
  const nlohmann::json j = {{"model_type", "qwen2_moe"}, {"vocab_size", 96}, {"hidden_size", 24},
                            {"num_hidden_layers", 3}, {"num_attention_heads", 3}, {"num_key_value_heads", 1},
                            {"num_experts", 8}, {"num_experts_per_tok", 2}, {"moe_intermediate_size", 20},
                            {"shared_expert_intermediate_size", 12}, {"intermediate_size", 40},
                            {"mlp_only_layers", {1}}, {"norm_topk_prob", false}, {"rms_norm_eps", 1e-6},
                            {"rope_theta", 10000.0}, {"tie_word_embeddings", false}, {"qkv_bias", true}};
  return parse_config(j, "ZeRO layout test config (qwen2_moe)");
}

// The trainer's gradient groups (layers, then head and embedding) and expert flags, from the names.
std::vector<ZeroParam> zero_params(const ModelConfig& config) {
  std::vector<ZeroParam> params;
  const std::string layer = "model.layers.";
  const ParamLayout layout(config);
  for (const ParamInfo& p : layout.params()) {
    int group = config.num_layers;
    if (p.name.rfind(layer, 0) == 0) group = std::stoi(p.name.substr(layer.size()));
    else if (p.name.rfind("model.embed_tokens.", 0) == 0) group = config.num_layers + 1;
    params.push_back({p.offset, p.numel, p.weight_decay, group, p.name.find("mlp.experts.") != std::string::npos});
  }
  return params;
}

// Every rank's layout for a world of `world` ranks whose expert replicas number `replicas` (world = EP x replicas,
// replica index = rank / EP): each parameter element stepped exactly once (tails: by every rank, counted by one), with
// its decay, its state inside the arena and disjoint from other parts, boundaries aligned, memory ~1/P.
void check_every_rank(const std::vector<ZeroParam>& params, size_t total, int world, int replicas) {
  const int ep = world / replicas;
  std::vector<int> stepped(total, 0), counted(total, 0);
  std::vector<int> decay(total, -1);
  size_t replicated = 0, experts = 0;
  for (const ZeroParam& p : params) (p.expert ? experts : replicated) += p.numel;
  for (int rank = 0; rank < world; ++rank) {
    SCOPED_TRACE(rank);
    const int replica_rank = rank / ep;
    const ZeroLayout layout = parallel::zero_layout(params, world, rank, replicas, replica_rank);
    std::vector<bool> state_used(layout.state_elements, false);
    size_t previous_end = 0;
    const bool counts_experts = rank % ep == 0;  // one EP rank stands for this test's (identical) expert layout
    for (const ZeroSegment& s : layout.segments) {
      EXPECT_GE(s.start, previous_end);
      previous_end = s.end;
      EXPECT_EQ(s.ranks, s.expert ? replicas : world);
      EXPECT_EQ(s.start % 8, 0u) << "segments start at ParamLayout's alignment";
      if (s.ranks > 1) {
        EXPECT_EQ(s.shard % kZeroAlign, 0u);
        EXPECT_LT(s.tail.count(), static_cast<size_t>(s.ranks) * kZeroAlign);
      }
      EXPECT_EQ(s.own.begin, s.shard_begin(s.rank));
      EXPECT_EQ(s.tail.begin, s.start + s.body());
      EXPECT_EQ(s.tail.end, s.end);
      for (const ZeroPart* part : {&s.own, &s.tail}) {
        EXPECT_EQ(part->state % kZeroAlign, 0u);
        EXPECT_LE(part->state + part->count(), layout.state_elements);
        for (size_t i = 0; i < part->count(); ++i) {
          EXPECT_FALSE(state_used[part->state + i]) << "state element " << part->state + i << " used twice";
          state_used[part->state + i] = true;
        }
        const bool is_tail = part == &s.tail;
        if (s.expert && !counts_experts) continue;
        for (const parallel::ZeroSpan& span : part->spans)
          for (size_t i = 0; i < span.count; ++i) {
            const size_t element = part->begin + span.offset + i;
            ASSERT_LT(element, part->end);
            if (!is_tail || s.counts_tail()) ++counted[element];
            if (!is_tail || rank == 0) ++stepped[element];
            EXPECT_TRUE(decay[element] == -1 || decay[element] == static_cast<int>(span.decay));
            decay[element] = span.decay;
          }
      }
    }
    // Memory: the rank's share plus at most a tail and two alignment roundings per segment.
    const size_t bound = replicated / world + experts / replicas +
                         layout.segments.size() * (static_cast<size_t>(world) + 2) * kZeroAlign;
    EXPECT_LE(layout.state_elements, bound);
  }
  for (const ZeroParam& p : params)
    for (size_t i = 0; i < p.numel; ++i) {
      ASSERT_EQ(stepped[p.offset + i], 1) << "element " << p.offset + i;
      ASSERT_EQ(counted[p.offset + i], 1) << "element " << p.offset + i;
      ASSERT_EQ(decay[p.offset + i], static_cast<int>(p.decay)) << "element " << p.offset + i;
    }
}

TEST(ZeroLayout, EveryElementSteppedAndCountedOnce) {
  const ModelConfig shared = shared_expert_config();
  for (const ModelConfig& config :
       {builtin_tiny_config(), shared, parallel::expert_shard_config(shared, 4, 4)}) {
    SCOPED_TRACE(config.architecture + (config.experts_sharded() ? " (expert shard)" : ""));
    const std::vector<ZeroParam> params = zero_params(config);
    const size_t total = ParamLayout(config).total_floats();
    for (const auto& [world, replicas] :
         {std::pair{1, 1}, std::pair{2, 2}, std::pair{2, 1}, std::pair{3, 3}, std::pair{4, 2}, std::pair{8, 8},
          std::pair{8, 4}}) {
      SCOPED_TRACE(std::to_string(world) + " ranks, " + std::to_string(replicas) + " expert replicas");
      check_every_rank(params, total, world, replicas);
    }
  }
}

TEST(ZeroLayout, SegmentsFollowGroupsAndKinds) {
  const ModelConfig config = shared_expert_config();
  const ZeroLayout layout = parallel::zero_layout(zero_params(config), 2, 0, 2, 0);
  // embedding; layer 0: attention+router, experts, shared expert; layer 1 (dense): one; layer 2: three; head.
  ASSERT_EQ(layout.segments.size(), 9u);
  const std::vector<std::pair<int, bool>> expected = {{4, false}, {0, false}, {0, true},  {0, false}, {1, false},
                                                      {2, false}, {2, true},  {2, false}, {3, false}};
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(layout.segments[i].group, expected[i].first) << "segment " << i;
    EXPECT_EQ(layout.segments[i].expert, expected[i].second) << "segment " << i;
  }
}

}  // namespace
}  // namespace moetune::testing
