// Why: a multi-GPU `moetune train` gives each rank a slice of two things: its rows of every global batch (the data is
// sharded over the whole world, docs/PARALLEL.md), and, with expert parallelism, its experts of every parameter arena
// (weights, AdamW moments). Checkpoints and the final model speak the full layout: a rank reads only its slice of a
// checkpoint when it resumes (train/train_state.h read_checkpoint_values, checked against slice_to_shard of the full
// arenas, which also cuts the built-in model), and writes its part of the full checkpoint straight from its slice when
// it saves (io/checkpoint_writer.h: no rank gathers the others'). These are plain functions of host memory, kept apart
// from the NCCL calls so that the CPU tests can check them exactly. Header-only because the CLI's sources are not part
// of the library the tests link.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "core/error.h"
#include "io/checkpoint_writer.h"
#include "model/config.h"
#include "model/weights.h"
#include "parallel/expert_shard.h"
#include "train/data.h"

namespace moetune::cli {

// Rows [first, first + count) of `batch` (every per-row tensor cut the same way). real_tokens is unknown (-1) in the
// slice: padding cannot be told from data without the pad id; RankRows keeps the whole batch's count.
inline Batch batch_rows(const Batch& batch, int first, int count) {
  if (first < 0 || count < 1 || first + count > batch.batch_size)
    fail("batch_rows: rows [", first, ", ", first + count, ") of a batch of ", batch.batch_size);
  const size_t seq = static_cast<size_t>(batch.seq_len);
  auto cut = [&](const std::vector<int32_t>& rows) {
    if (rows.empty()) return std::vector<int32_t>{};
    const auto begin = rows.begin() + static_cast<std::ptrdiff_t>(static_cast<size_t>(first) * seq);
    return std::vector<int32_t>(begin, begin + static_cast<std::ptrdiff_t>(static_cast<size_t>(count) * seq));
  };
  Batch out;
  out.batch_size = count;
  out.seq_len = batch.seq_len;
  out.input_ids = cut(batch.input_ids);
  out.labels = cut(batch.labels);
  out.positions = cut(batch.positions);
  out.doc_start = cut(batch.doc_start);
  return out;
}

// One rank's rows of a stream of global batches: the global stream cuts batches of world x B rows (B = rows per rank),
// and rank r takes rows [r*B, (r+1)*B) of each, so W ranks with B rows each see exactly the rows one process with
// W x B rows sees, step by step. epoch/position/seek/dataset_size are the global stream's (a checkpoint records where
// the whole run stands, and a resume with another world size continues from there).
class RankRows final : public BatchStream {
 public:
  RankRows(std::unique_ptr<BatchStream> global, int rank, int world, int rows_per_rank)
      : global_(std::move(global)), rank_(rank), world_(world), rows_(rows_per_rank) {
    if (world < 1 || rank < 0 || rank >= world || rows_per_rank < 1)
      fail("RankRows: rank ", rank, " of ", world, " with ", rows_per_rank, " rows per rank");
  }
  Batch next() override {
    const Batch all = global_->next();
    if (all.batch_size != world_ * rows_)
      fail("RankRows: a global batch of ", all.batch_size, " rows, expected ", world_, " ranks x ", rows_);
    global_real_tokens_ = all.real_tokens;
    return batch_rows(all, rank_ * rows_, rows_);
  }
  int64_t epoch() const override { return global_->epoch(); }
  size_t position() const override { return global_->position(); }
  void seek(int64_t epoch, size_t position) override { global_->seek(epoch, position); }
  size_t dataset_size() const override { return global_->dataset_size(); }
  // Non-padding tokens of the last global batch (-1: not known), for the run's metrics.
  int64_t global_real_tokens() const { return global_real_tokens_; }

 private:
  std::unique_ptr<BatchStream> global_;
  int rank_, world_, rows_;
  int64_t global_real_tokens_ = -1;
};

// Where a shard's parameter lies in the full layout: elements [shard_offset, shard_offset + count) of the shard's
// arena are elements [full_offset, full_offset + count) of the full one. expert: a routed-expert tensor (the shard holds
// a block of its experts; every other parameter is replicated whole on every rank).
struct ShardRun {
  size_t shard_offset = 0, full_offset = 0, count = 0;
  bool expert = false;
};

// The runs of `shard` (an expert_shard_config of `full`), one per parameter, ascending in both layouts. Expert tensors
// are expert-major in the layout, so a block of experts is one run.
inline std::vector<ShardRun> shard_runs(const ModelConfig& full, const ModelConfig& shard) {
  const parallel::ShardOffsetMap map(full, shard);
  std::vector<ShardRun> runs;
  for (const ParamInfo& p : map.full_layout().params()) {
    const ParamInfo* local = map.shard_layout().find(p.name);
    if (!local) fail("shard_runs: ", p.name, " is missing from the shard's layout");
    ShardRun run;
    run.count = local->numel;
    run.expert = local->numel != p.numel;
    run.full_offset = p.offset;
    if (run.expert)
      run.full_offset += p.numel / static_cast<size_t>(full.num_experts) * static_cast<size_t>(shard.expert_shard_begin);
    run.shard_offset = map.to_shard(run.full_offset, run.count);  // validates the run
    if (run.shard_offset != local->offset) fail("shard_runs: ", p.name, " does not start the shard's run");
    runs.push_back(run);
  }
  return runs;
}

// The shard's arena (shard_size elements, alignment gaps zero) cut from a full arena.
inline std::vector<float> slice_to_shard(const std::vector<ShardRun>& runs, const float* full, size_t shard_size) {
  std::vector<float> out(shard_size, 0.0f);
  for (const ShardRun& run : runs) {
    if (run.shard_offset + run.count > shard_size) fail("slice_to_shard: a run ends past the shard's arena");
    std::copy_n(full + run.full_offset, run.count, out.begin() + static_cast<std::ptrdiff_t>(run.shard_offset));
  }
  return out;
}

// The runs of a shard's arena that EP rank `ep_rank` of `ep` writes in a cooperative save (io/checkpoint_writer.h), so
// that the EP ranks of one DP replica write every element once between them: all of its experts, and its part of the
// replicated parameters, which every rank holds alike: their elements, in full-layout order, cut into `ep` parts of
// nearly equal size (part ep_rank), so that no rank writes the dense tensors for all.
inline std::vector<ShardRun> written_runs(const std::vector<ShardRun>& runs, int ep_rank, int ep) {
  if (ep < 1 || ep_rank < 0 || ep_rank >= ep) fail("written_runs: EP rank ", ep_rank, " of ", ep);
  size_t replicated = 0;
  for (const ShardRun& run : runs)
    if (!run.expert) replicated += run.count;
  const size_t first = replicated / static_cast<size_t>(ep) * static_cast<size_t>(ep_rank) +
                       std::min(replicated % static_cast<size_t>(ep), static_cast<size_t>(ep_rank));
  const size_t last = first + replicated / static_cast<size_t>(ep) +
                      (static_cast<size_t>(ep_rank) < replicated % static_cast<size_t>(ep) ? 1 : 0);
  std::vector<ShardRun> written;
  size_t seen = 0;  // replicated elements before `run`
  for (const ShardRun& run : runs) {
    if (run.expert) {
      written.push_back(run);
      continue;
    }
    const size_t begin = std::max(seen, first), end = std::min(seen + run.count, last);
    if (begin < end) written.push_back({run.shard_offset + (begin - seen), run.full_offset + (begin - seen), end - begin, false});
    seen += run.count;
  }
  return written;
}

// `written` (runs of a shard's arenas) as the values a save takes: the weights at `params`, and the AdamW moments at
// `exp_avg` / `exp_avg_sq` (both null for a model without its optimizer state).
inline std::vector<HeldRun> held_runs(const std::vector<ShardRun>& written, const float* params, const float* exp_avg,
                                      const float* exp_avg_sq) {
  std::vector<HeldRun> held;
  for (const auto& [arena, data] : {std::pair{SourceArena::Params, params}, std::pair{SourceArena::ExpAvg, exp_avg},
                                    std::pair{SourceArena::ExpAvgSq, exp_avg_sq}})
    if (data)
      for (const ShardRun& run : written) held.push_back({arena, run.full_offset, run.count, data + run.shard_offset});
  return held;
}

}  // namespace moetune::cli
