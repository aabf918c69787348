// Why: see sequence_sampler.h. Randomness is std::mt19937_64 with our own reductions (as train/data.cpp), so orders
// and splits are the same on every platform.
#include "dataset/sequence_sampler.h"

#include <algorithm>
#include <limits>
#include <random>

#include "core/error.h"
#include "core/random.h"

namespace moetune {

namespace {

constexpr size_t kOpenRows = 64;
constexpr size_t kExamples = 5;

}  // namespace

LongSamples parse_long_samples(const std::string& text) {
  if (text == "fail") return LongSamples::Fail;
  if (text == "truncate") return LongSamples::Truncate;
  if (text == "drop") return LongSamples::Drop;
  fail("--long-samples must be fail, truncate or drop, got \"", text, "\"");
}

bool in_validation_split(size_t index, double val_fraction, uint64_t seed) {
  if (val_fraction <= 0.0) return false;
  const uint64_t h = mix64(mix64(seed ^ 0x73706c6974ull) ^ static_cast<uint64_t>(index));
  return static_cast<double>(h >> 11) * 0x1.0p-53 < val_fraction;
}

SampleSet::SampleSet(const DatasetCache& cache, Split split, const SampleSetOptions& options)
    : cache_(&cache), seq_len_(options.seq_len) {
  if (options.seq_len < 2) fail("sequence length ", options.seq_len, " is too short (need >= 2)");
  if (options.val_fraction < 0.0 || options.val_fraction >= 1.0)
    fail("--val-fraction ", options.val_fraction, " is not in [0, 1)");
  if (options.vocab_size > 0 && cache.max_id() >= options.vocab_size)
    fail(cache.path(), ": token id ", cache.max_id(), " is not below the model's vocab_size ", options.vocab_size,
         " (tokenizer and model do not match)");
  const uint32_t seq_len = static_cast<uint32_t>(options.seq_len);
  for (size_t i = 0; i < cache.size(); ++i) {
    const bool validation = in_validation_split(i, options.val_fraction, options.split_seed);
    if (validation != (split == Split::Validation)) {
      ++other_split_;
      continue;
    }
    const DatasetCache::SampleView view = cache.sample(i);
    uint32_t length = view.length;
    if (length > seq_len) {
      switch (options.long_samples) {
        case LongSamples::Fail:
          fail(cache.where(i), ": sample has ", length, " tokens, longer than --seq-len ", seq_len,
               " (--long-samples truncate or drop)");
        case LongSamples::Drop:
          ++dropped_long_;
          if (examples_.size() < kExamples)
            examples_.push_back(str(cache.where(i), ": ", length, " tokens, longer than --seq-len ", seq_len, ", left out"));
          continue;
        case LongSamples::Truncate:
          ++truncated_;
          if (examples_.size() < kExamples)
            examples_.push_back(str(cache.where(i), ": ", length, " tokens, cut to --seq-len ", seq_len));
          truncated_tokens_ += length - seq_len;
          length = seq_len;
          break;
      }
    }
    bool trained = false;
    for (uint32_t t = 1; t < length && !trained; ++t) trained = view.loss[t] != 0;
    if (!trained) {
      ++dropped_untrained_;
      if (examples_.size() < kExamples)
        examples_.push_back(str(cache.where(i), ": no trained token within the first ", length, " tokens, left out"));
      continue;
    }
    members_.push_back(i);
    lengths_.push_back(length);
    tokens_ += length;
  }
}

SequenceSampler::SequenceSampler(const SampleSet& set, int batch_size, uint64_t seed, bool shuffle, bool packing,
                                 int32_t pad_id)
    : set_(&set), batch_size_(batch_size), seed_(seed), shuffle_(shuffle), packing_(packing), pad_id_(pad_id) {
  if (batch_size <= 0) fail("batch size ", batch_size, " must be > 0");
  if (set.size() == 0) fail("no samples to draw batches from");
  if (set.size() > std::numeric_limits<uint32_t>::max()) fail("more than 2^32 samples in one split");
  start_epoch(0);
}

void SequenceSampler::start_epoch(int64_t epoch) {
  epoch_ = epoch;
  position_ = 0;
  order_.resize(set_->size());
  for (size_t i = 0; i < order_.size(); ++i) order_[i] = static_cast<uint32_t>(i);
  if (shuffle_) {
    std::mt19937_64 rng(mix64(seed_ ^ mix64(static_cast<uint64_t>(epoch) + 0x7061636bull)));
    for (size_t i = order_.size(); i > 1; --i) std::swap(order_[i - 1], order_[uniform_below(rng, i)]);
  }
  epoch_tokens_ = set_->tokens();
  if (!packing_) {
    row_count_ = order_.size();
    return;
  }
  // First fit over up to kOpenRows open rows, in the epoch's order.
  struct OpenRow {
    std::vector<uint32_t> items;
    uint32_t used = 0;
  };
  const uint32_t seq_len = static_cast<uint32_t>(set_->seq_len());
  std::vector<OpenRow> open;
  row_items_.clear();
  row_begin_.assign(1, 0);
  auto emit = [&](size_t which) {
    row_items_.insert(row_items_.end(), open[which].items.begin(), open[which].items.end());
    row_begin_.push_back(row_items_.size());
    open.erase(open.begin() + static_cast<long>(which));
  };
  for (uint32_t sample : order_) {
    const uint32_t length = set_->length(sample);
    bool placed = false;
    for (size_t r = 0; r < open.size(); ++r) {
      if (open[r].used + length > seq_len) continue;
      open[r].items.push_back(sample);
      open[r].used += length;
      if (open[r].used == seq_len) emit(r);
      placed = true;
      break;
    }
    if (placed) continue;
    if (open.size() == kOpenRows) emit(0);
    open.push_back(OpenRow{{sample}, length});
    if (length == seq_len) emit(open.size() - 1);
  }
  while (!open.empty()) emit(0);
  row_count_ = row_begin_.size() - 1;
}

double SequenceSampler::fill() const {
  return static_cast<double>(epoch_tokens_) / (static_cast<double>(row_count_) * set_->seq_len());
}

void SequenceSampler::seek(int64_t epoch, size_t position) {
  if (epoch < 0) fail("cannot resume at epoch ", epoch);
  start_epoch(epoch);
  if (position >= row_count_)
    fail("cannot resume at row ", position, " of epoch ", epoch, ": the data gives ", row_count_, " rows per epoch");
  position_ = position;
}

void SequenceSampler::write_row(size_t row, int32_t* ids, int32_t* labels, int32_t* positions, int32_t* doc_start,
                                int64_t* real) const {
  const int T = set_->seq_len();
  int offset = 0;
  auto place = [&](uint32_t member) {
    const DatasetCache::SampleView view = set_->sample(member);
    const int length = static_cast<int>(set_->length(member));
    for (int t = 0; t < length; ++t) {
      ids[offset + t] = view.ids[t];
      labels[offset + t] = view.loss[t] ? view.ids[t] : kIgnoreLabel;
      if (positions) {
        positions[offset + t] = t;
        doc_start[offset + t] = offset;
      }
    }
    // A document's first token is no one's target: not the previous document's next token.
    if (positions) labels[offset] = kIgnoreLabel;
    offset += length;
  };
  if (packing_) {
    for (uint64_t k = row_begin_[row]; k < row_begin_[row + 1]; ++k) place(row_items_[k]);
  } else {
    place(order_[row]);
  }
  *real += offset;
  const int tail = offset;
  for (int t = offset; t < T; ++t) {
    ids[t] = pad_id_;
    labels[t] = kIgnoreLabel;
    if (positions) {
      positions[t] = t - tail;
      doc_start[t] = tail;
    }
  }
}

Batch SequenceSampler::next() {
  Batch batch;
  batch.batch_size = batch_size_;
  batch.seq_len = set_->seq_len();
  const size_t T = static_cast<size_t>(batch.seq_len);
  const size_t cells = static_cast<size_t>(batch_size_) * T;
  batch.input_ids.assign(cells, pad_id_);
  batch.labels.assign(cells, kIgnoreLabel);
  if (packing_) {
    batch.positions.assign(cells, 0);
    batch.doc_start.assign(cells, 0);
  }
  batch.real_tokens = 0;
  for (int r = 0; r < batch_size_; ++r) {
    const size_t at = static_cast<size_t>(r) * T;
    write_row(position_, &batch.input_ids[at], &batch.labels[at], packing_ ? &batch.positions[at] : nullptr,
              packing_ ? &batch.doc_start[at] : nullptr, &batch.real_tokens);
    if (++position_ == row_count_) start_epoch(epoch_ + 1);
  }
  return batch;
}

}  // namespace moetune
