// Why: the engines train on token ids in dense (batch, seq_len) blocks (Batch). This file reads data that is already
// token ids: a flat file of uint32 ids (pretraining-style, cut into windows) or JSONL samples with optional labels
// (fine-tuning-style, where -100 masks the prompt), both fixed-length rows of seq_len tokens. Text, instruction and chat
// data are tokenized by src/dataset/ into a cache and cut into rows (padded or packed) by its SequenceSampler; both
// feed the train loop through BatchStream. Bad data fails here, once, with the file, the line and the item named, rather than as a wrong loss later. The
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

// A batch: row-major (batch_size, seq_len) ids and labels. A packed batch (several documents per row) also carries
// each token's RoPE position (restarting at 0 per document) and the row position where its document begins (attention
// stays inside the document); an unpacked batch leaves both empty (positions t, one document per row).
struct Batch {
  int batch_size = 0;
  int seq_len = 0;
  std::vector<int32_t> input_ids;  // (batch_size, seq_len)
  std::vector<int32_t> labels;     // (batch_size, seq_len)
  std::vector<int32_t> positions;  // (batch_size, seq_len) or empty
  std::vector<int32_t> doc_start;  // (batch_size, seq_len) or empty; doc_start[r * seq_len + t] <= t
  int64_t real_tokens = -1;        // tokens that are not padding; -1: not known
  bool packed() const { return !doc_start.empty(); }
};

// A stream of training batches that can say where it stands and resume there (checkpoints record epoch/position and
// the number of rows it walks).
class BatchStream {
 public:
  virtual ~BatchStream() = default;
  virtual Batch next() = 0;
  // Epochs completed so far and the index of the next row in this epoch's order.
  virtual int64_t epoch() const = 0;
  virtual size_t position() const = 0;
  // Resumes at a point saved from epoch()/position(): the rows that follow are those an uninterrupted stream gives.
  virtual void seek(int64_t epoch, size_t position) = 0;
  // Samples the stream walks per epoch (a changed dataset is caught when resuming).
  virtual size_t dataset_size() const = 0;
};

// Walks the dataset in a seeded random order (a new permutation each epoch, a function of (seed, epoch) only) and cuts
// batches of rows; a batch that reaches the end of an epoch continues with the next epoch's first rows. The dataset
// must outlive the sampler.
class BatchSampler : public BatchStream {
 public:
  BatchSampler(const TokenDataset& dataset, int batch_size, uint64_t seed, bool shuffle = true);
  Batch next() override;
  // Where the next row comes from: epochs completed so far and the index into this epoch's order.
  int64_t epoch() const override { return epoch_; }
  size_t position() const override { return position_; }
  // Resumes at a point saved from epoch()/position(): the rows that follow are those an uninterrupted sampler would
  // give.
  void seek(int64_t epoch, size_t position) override;
  size_t dataset_size() const override { return dataset_->size(); }

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
