// Why: a multi-GPU `moetune train` is only the single-GPU run of the global batch if every rank takes exactly its rows
// of each global batch (a row seen twice or lost would not show in a loss curve), and its checkpoints are only right if
// the experts cut out of a full arena land where they came from, and the parts the ranks write of a save cover every
// element once. Both are checked
// exactly here, without GPUs: rows by their token values, arenas by element indices, with pieces that straddle
// parameters and a model whose shared expert must not be taken for a routed one.
#include <gtest/gtest.h>

#include <memory>
#include <numeric>

#include "cli/rank_slices.h"
#include "core/error.h"
#include "model/config.h"
#include "model/weights.h"
#include "parallel/expert_shard.h"

namespace moetune::testing {
namespace {

using cli::RankRows;
using cli::ShardRun;

// Batches of `rows` rows whose tokens number the rows of the stream (row k holds k * 100 + t), packed: positions and
// document starts per row as well.
class CountingStream final : public BatchStream {
 public:
  CountingStream(int rows, int seq) : rows_(rows), seq_(seq) {}
  Batch next() override {
    Batch b;
    b.batch_size = rows_;
    b.seq_len = seq_;
    for (int r = 0; r < rows_; ++r, ++row_)
      for (int t = 0; t < seq_; ++t) {
        b.input_ids.push_back(static_cast<int32_t>(row_ * 100 + t));
        b.labels.push_back(static_cast<int32_t>(row_ * 100 + t + 1));
        b.positions.push_back(t % 3);
        b.doc_start.push_back(t - t % 3);
      }
    b.real_tokens = static_cast<int64_t>(rows_) * seq_ - 1;
    return b;
  }
  int64_t epoch() const override { return row_ / 10; }
  size_t position() const override { return static_cast<size_t>(row_ % 10); }
  void seek(int64_t epoch, size_t position) override { row_ = epoch * 10 + static_cast<int64_t>(position); }
  size_t dataset_size() const override { return 10; }

 private:
  int rows_, seq_;
  int64_t row_ = 0;
};

TEST(RankRows, EachRankTakesItsRowsOfEveryGlobalBatch) {
  const int world = 3, per_rank = 2, seq = 5;
  std::vector<std::unique_ptr<RankRows>> ranks;
  for (int r = 0; r < world; ++r)
    ranks.push_back(std::make_unique<RankRows>(std::make_unique<CountingStream>(world * per_rank, seq), r, world, per_rank));
  for (int step = 0; step < 3; ++step) {
    for (int r = 0; r < world; ++r) {
      const Batch b = ranks[r]->next();
      ASSERT_EQ(b.batch_size, per_rank);
      ASSERT_EQ(b.seq_len, seq);
      ASSERT_EQ(b.input_ids.size(), static_cast<size_t>(per_rank * seq));
      ASSERT_EQ(b.positions.size(), b.input_ids.size());
      ASSERT_EQ(b.doc_start.size(), b.input_ids.size());
      for (int i = 0; i < per_rank; ++i) {
        const int64_t global_row = step * world * per_rank + r * per_rank + i;
        for (int t = 0; t < seq; ++t) {
          const size_t at = static_cast<size_t>(i * seq + t);
          EXPECT_EQ(b.input_ids[at], global_row * 100 + t) << "rank " << r << " row " << i;
          EXPECT_EQ(b.labels[at], global_row * 100 + t + 1);
          EXPECT_EQ(b.positions[at], t % 3);
          EXPECT_EQ(b.doc_start[at], t - t % 3);
        }
      }
      EXPECT_EQ(b.real_tokens, -1) << "a slice's padding is not known";
      EXPECT_EQ(ranks[r]->global_real_tokens(), world * per_rank * seq - 1);
    }
  }
  // The position is the global stream's, and seeking moves it.
  EXPECT_EQ(ranks[1]->epoch(), 1);
  EXPECT_EQ(ranks[1]->position(), 8u);
  ranks[1]->seek(0, 4);
  EXPECT_EQ(ranks[1]->next().input_ids[0], (4 + per_rank) * 100);
}

TEST(RankRows, BadPlacesAndBatchesAreErrors) {
  EXPECT_THROW(RankRows(std::make_unique<CountingStream>(4, 2), 2, 2, 2), Error);
  EXPECT_THROW(RankRows(std::make_unique<CountingStream>(4, 2), 0, 2, 0), Error);
  RankRows wrong(std::make_unique<CountingStream>(3, 2), 0, 2, 2);  // a global batch of 3 rows for 2 x 2
  EXPECT_THROW(wrong.next(), Error);
  const Batch b = CountingStream(4, 2).next();
  EXPECT_THROW(cli::batch_rows(b, 3, 2), Error);
  EXPECT_EQ(cli::batch_rows(b, 3, 1).input_ids, (std::vector<int32_t>{300, 301}));
}

// A model with routed experts on two sparse layers, a dense layer and a shared expert (replicated, not sharded).
ModelConfig shared_expert_config() {
  const nlohmann::json j = {{"model_type", "qwen2_moe"}, {"vocab_size", 64}, {"hidden_size", 16},
                            {"num_hidden_layers", 3}, {"num_attention_heads", 2}, {"num_key_value_heads", 1},
                            {"num_experts", 8}, {"num_experts_per_tok", 2}, {"moe_intermediate_size", 8},
                            {"shared_expert_intermediate_size", 12}, {"intermediate_size", 24},
                            {"mlp_only_layers", {1}}, {"norm_topk_prob", false}, {"rms_norm_eps", 1e-6},
                            {"rope_theta", 10000.0}, {"tie_word_embeddings", false}};
  return parse_config(j, "rank slices test config (qwen2_moe)");
}

TEST(ShardArenas, SlicesAndTheRunsTheRanksWriteRebuildTheFullArena) {
  for (const ModelConfig& full : {builtin_tiny_config(), shared_expert_config()}) {
    SCOPED_TRACE(full.architecture);
    const ParamLayout full_layout(full);
    // Every element its own index (+1); alignment gaps zero.
    std::vector<float> arena(full_layout.total_floats(), 0.0f);
    for (const ParamInfo& p : full_layout.params())
      for (size_t i = 0; i < p.numel; ++i) arena[p.offset + i] = static_cast<float>(p.offset + i + 1);
    for (const int ep : {2, 4}) {
      SCOPED_TRACE(ep);
      const int per = full.num_experts / ep;
      std::vector<std::vector<ShardRun>> runs;
      std::vector<std::vector<float>> shards;
      for (int q = 0; q < ep; ++q) {
        const ModelConfig shard = parallel::expert_shard_config(full, q * per, per);
        runs.push_back(cli::shard_runs(full, shard));
        shards.push_back(cli::slice_to_shard(runs.back(), arena.data(), ParamLayout(shard).total_floats()));
        // The slice holds exactly the shard's parameters, read through the shard's own layout.
        const ParamLayout shard_layout(shard);
        for (const ParamInfo& p : shard_layout.params()) {
          const ParamInfo* whole = full_layout.find(p.name);
          const bool expert = whole->numel != p.numel;
          EXPECT_EQ(expert, p.name.find("mlp.experts.") != std::string::npos) << p.name;
          const size_t skip = expert ? whole->numel / static_cast<size_t>(full.num_experts) * static_cast<size_t>(q * per) : 0;
          for (size_t i = 0; i < p.numel; ++i)
            ASSERT_EQ(shards[q][p.offset + i], arena[whole->offset + skip + i]) << p.name << " element " << i;
        }
      }
      // What the EP ranks write in a save (their held runs, read from their shards) lands every element once.
      std::vector<float> rebuilt(arena.size(), 0.0f);
      std::vector<int> writes(arena.size(), 0);
      for (int q = 0; q < ep; ++q)
        for (const HeldRun& run : cli::held_runs(cli::written_runs(runs[q], q, ep), shards[q].data(), nullptr, nullptr)) {
          ASSERT_EQ(run.arena, SourceArena::Params);
          for (size_t i = 0; i < run.count; ++i) {
            rebuilt[run.offset + i] = run.data[i];
            ++writes[run.offset + i];
          }
        }
      EXPECT_EQ(rebuilt, arena);
      for (const ParamInfo& p : full_layout.params())
        for (size_t i = 0; i < p.numel; ++i) ASSERT_EQ(writes[p.offset + i], 1) << p.name << " element " << i;
    }
  }
}

TEST(ShardArenas, EachRankWritesItsExpertsAndAnEvenShareOfTheReplicatedParameters) {
  const ModelConfig full = shared_expert_config();
  for (const int ep : {1, 2, 4, 8}) {
    SCOPED_TRACE(ep);
    const int per = full.num_experts / ep;
    size_t replicated = 0, shares = 0;
    for (int q = 0; q < ep; ++q) {
      const std::vector<ShardRun> runs = cli::shard_runs(full, parallel::expert_shard_config(full, q * per, per));
      size_t held_experts = 0, written_experts = 0, share = 0;
      replicated = 0;
      for (const ShardRun& run : runs) (run.expert ? held_experts : replicated) += run.count;
      for (const ShardRun& run : cli::written_runs(runs, q, ep)) (run.expert ? written_experts : share) += run.count;
      EXPECT_EQ(written_experts, held_experts) << "rank " << q << " writes all of its experts";
      EXPECT_GE(share, replicated / static_cast<size_t>(ep)) << "rank " << q;
      EXPECT_LE(share, replicated / static_cast<size_t>(ep) + 1) << "rank " << q;
      shares += share;
    }
    EXPECT_EQ(shares, replicated);
  }
  EXPECT_THROW(cli::written_runs({}, 2, 2), Error);
}

}  // namespace
}  // namespace moetune::testing
