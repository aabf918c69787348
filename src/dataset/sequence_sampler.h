// Why: the tokenized samples of a cache (variable length, with loss masks) must become fixed (batch, seq_len) blocks.
// Two ways, chosen by --packing:
//   off (padding)  one sample per row, padded with pad_id (label -100): simple, wasteful when samples are short;
//   on  (packing)  several samples per row, each its own document: RoPE positions restart at 0 and attention stays
//                  inside the document (Batch::positions / Batch::doc_start; the CPU engine honours both), the first
//                  token of every document gets label -100 (it must not be the target of the previous document's last
//                  token), so a packed row's loss is exactly the sum of its documents' own losses.
// Rows of an epoch: the samples in a seeded order (a permutation that depends on (seed, epoch) only; identity without
// shuffling). Packing places each sample, in that order, into the first of up to 64 open rows where it fits; a row
// that is full is emitted, and when no open row has room the oldest is emitted to make room. Everything is a function
// of (seed, epoch), so an epoch can be rebuilt to resume at any row.
//
// Which samples a set holds: the train/validation split is a seeded hash of the sample's index in the cache (the same
// samples are held out however the data is read), then samples longer than seq_len are truncated, dropped or fail
// (naming file:line) by --long-samples, and samples left without a trained token are dropped (counted).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dataset/dataset_cache.h"
#include "train/data.h"

namespace moetune {

enum class LongSamples { Fail, Truncate, Drop };
LongSamples parse_long_samples(const std::string& text);  // fail|truncate|drop

enum class Split { Train, Validation };

struct SampleSetOptions {
  int seq_len = 0;
  LongSamples long_samples = LongSamples::Fail;
  double val_fraction = 0.0;  // share of samples held out for validation, by a hash of their index
  uint64_t split_seed = 0;
  int vocab_size = 0;         // every id must be below it (0: unchecked)
};

// True when sample `index` of a cache belongs to the validation split.
bool in_validation_split(size_t index, double val_fraction, uint64_t seed);

// The samples of one split of a cache, fitted to seq_len. The cache must outlive the set.
class SampleSet {
 public:
  SampleSet(const DatasetCache& cache, Split split, const SampleSetOptions& options);

  size_t size() const { return members_.size(); }
  int seq_len() const { return seq_len_; }
  uint32_t length(size_t i) const { return lengths_[i]; }          // after truncation, <= seq_len
  DatasetCache::SampleView sample(size_t i) const { return cache_->sample(members_[i]); }

  int64_t tokens() const { return tokens_; }                      // sum of length(i)
  int64_t truncated() const { return truncated_; }                // samples cut to seq_len
  int64_t truncated_tokens() const { return truncated_tokens_; }
  int64_t dropped_long() const { return dropped_long_; }          // samples longer than seq_len left out (drop)
  int64_t dropped_untrained() const { return dropped_untrained_; }  // left without a trained token after truncation
  int64_t other_split() const { return other_split_; }            // samples of the cache in the other split
  // The first few samples truncated or left out, as "file:line: what happened".
  const std::vector<std::string>& examples() const { return examples_; }

 private:
  const DatasetCache* cache_;
  int seq_len_;
  std::vector<uint64_t> members_;   // indices into the cache
  std::vector<uint32_t> lengths_;
  int64_t tokens_ = 0, truncated_ = 0, truncated_tokens_ = 0, dropped_long_ = 0, dropped_untrained_ = 0,
          other_split_ = 0;
  std::vector<std::string> examples_;
};

class SequenceSampler : public BatchStream {
 public:
  SequenceSampler(const SampleSet& set, int batch_size, uint64_t seed, bool shuffle, bool packing, int32_t pad_id);

  Batch next() override;
  int64_t epoch() const override { return epoch_; }
  size_t position() const override { return position_; }   // row index in this epoch
  void seek(int64_t epoch, size_t position) override;
  size_t dataset_size() const override { return set_->size(); }

  size_t rows_in_epoch() const { return row_count_; }
  // Real tokens / (rows x seq_len) over this epoch's rows.
  double fill() const;
  bool packing() const { return packing_; }

 private:
  void start_epoch(int64_t epoch);
  void write_row(size_t row, int32_t* ids, int32_t* labels, int32_t* positions, int32_t* doc_start, int64_t* real) const;

  const SampleSet* set_;
  int batch_size_;
  uint64_t seed_;
  bool shuffle_, packing_;
  int32_t pad_id_;
  int64_t epoch_ = 0;
  size_t position_ = 0;
  std::vector<uint32_t> order_;       // (set size) this epoch's sample order
  std::vector<uint32_t> row_items_;   // packing: the samples of each row, row after row (indices into the set)
  std::vector<uint64_t> row_begin_;   // packing: (rows + 1) offsets into row_items_
  size_t row_count_ = 0;
  int64_t epoch_tokens_ = 0;
};

}  // namespace moetune
