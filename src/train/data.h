// Why: training reads token ids, never text: tokenization happens before moetune, so a dataset is either a flat file of
// uint32 ids (pretraining-style, cut into windows) or JSONL samples with optional labels (fine-tuning-style, where -100
// masks the prompt). Both become fixed-length rows of seq_len tokens, so every batch is one dense (batch, seq_len)
// block. Bad data fails here, once, with the file, the line and the item named, rather than as a wrong loss later. The
// sampler's order is computed with our own shuffle over std::mt19937_64 (whose output the standard fixes), so the same
// seed gives the same batches on every platform and standard library.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace moetune {

// Label value the loss skips (Hugging Face's convention).
constexpr int32_t kIgnoreLabel = -100;

// One training example: `input_ids` and `labels` have the same length (labels unshifted, as in Hugging Face: the loss
// shifts).
struct Sample {
  std::vector<int32_t> input_ids;  // (length,)
  std::vector<int32_t> labels;     // (length,) each -100 or an id
};

struct DataOptions {
  int vocab_size;              // ids must be < vocab_size
  int seq_len;                 // every batch row has exactly seq_len tokens
  int32_t pad_id = 0;          // fills short JSONL samples (their labels are -100 there)
  bool truncate_long = false;  // JSONL sample longer than seq_len: truncate (true) or fail naming file:line (false)
};

class TokenDataset {
 public:
  // Flat file of little-endian uint32 ids (any name not ending in ".jsonl"): cut into consecutive windows of seq_len
  // tokens (labels = ids); the tail shorter than seq_len is dropped and counted. JSONL ("*.jsonl"): one object per
  // non-empty line with "input_ids": [int...] and optional "labels": [int...] (same length; -100 allowed in labels;
  // absent labels = input_ids). Throws moetune::Error naming the file (and line) on bad data.
  static TokenDataset load(const std::string& path, const DataOptions& options);
  // Validates and pads/truncates in-memory samples like JSONL lines; empty `labels` means labels = input_ids.
  // Errors name the sample as "samples[i]".
  static TokenDataset from_samples(std::vector<Sample> samples, const DataOptions& options);

  size_t size() const { return samples_.size(); }
  int seq_len() const { return seq_len_; }
  // Already padded/truncated: both vectors are (seq_len,).
  const Sample& operator[](size_t index) const;
  // Tokens read but not used: the flat file's tail shorter than seq_len, or tokens cut from long JSONL samples.
  int64_t dropped_tail_tokens() const { return dropped_tokens_; }
  // Tokens that are not padding.
  int64_t real_tokens() const { return real_tokens_; }

 private:
  TokenDataset() = default;
  std::vector<Sample> samples_;
  int seq_len_ = 0;
  int64_t dropped_tokens_ = 0;
  int64_t real_tokens_ = 0;
};

// A batch: row-major (batch_size, seq_len) ids and labels.
struct Batch {
  int batch_size = 0;
  int seq_len = 0;
  std::vector<int32_t> input_ids;  // (batch_size, seq_len)
  std::vector<int32_t> labels;     // (batch_size, seq_len)
};

// Walks the dataset in a seeded random order (a new permutation each epoch, a function of (seed, epoch) only) and cuts
// batches of rows; a batch that reaches the end of an epoch continues with the next epoch's first rows. The dataset
// must outlive the sampler.
class BatchSampler {
 public:
  BatchSampler(const TokenDataset& dataset, int batch_size, uint64_t seed, bool shuffle = true);
  Batch next();
  // Where the next row comes from: epochs completed so far and the index into this epoch's order.
  int64_t epoch() const { return epoch_; }
  size_t position() const { return position_; }
  // Resumes at a point saved from epoch()/position(): the rows that follow are those an uninterrupted sampler would
  // give.
  void seek(int64_t epoch, size_t position);

 private:
  void start_epoch(int64_t epoch);
  const TokenDataset* dataset_;
  int batch_size_;
  uint64_t seed_;
  bool shuffle_;
  std::vector<size_t> order_;  // (dataset size,) this epoch's permutation of sample indices
  int64_t epoch_ = 0;
  size_t position_ = 0;
};

// The embedded demo corpus: a deterministic synthetic "language" with learnable structure. Each token has 4 likely
// successors, skewed toward small ids (so unigram and bigram statistics are learnable); which successor is favourite
// depends on the token before (order 2); 5% of tokens are uniform noise; and 8 fixed phrases recur (memorisable).
// Same (vocab_size, count, seed) => same tokens, all in [0, vocab_size).
std::vector<int32_t> generate_demo_tokens(int vocab_size, int64_t count, uint64_t seed);

// Writes ids as a flat little-endian uint32 file (readable by TokenDataset::load).
void write_token_file(const std::string& path, const std::vector<int32_t>& ids);
// Writes ids as JSONL lines {"input_ids": [...]} of seq_len tokens each; a shorter remainder becomes a last, shorter
// line.
void write_token_jsonl(const std::string& path, const std::vector<int32_t>& ids, int seq_len);

}  // namespace moetune
