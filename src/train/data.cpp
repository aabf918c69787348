// Why: the only code that reads training data from disk. Every check a user's file can fail is here, each ending as one
// line "path:line: what is wrong", and every randomness source is std::mt19937_64 with our own reductions (no
// std::uniform_int_distribution or std::shuffle, whose algorithms differ between standard libraries).
#include "train/data.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"
#include "core/random.h"

namespace moetune {

namespace {

using nlohmann::json;

void check_options(const DataOptions& options) {
  if (options.vocab_size <= 0) fail("data options: vocab_size is ", options.vocab_size, ", must be > 0");
  if (options.seq_len <= 0) fail("data options: seq_len is ", options.seq_len, ", must be > 0");
  if (options.pad_id < 0 || options.pad_id >= options.vocab_size)
    fail("data options: pad_id ", options.pad_id, " is not in [0, vocab_size ", options.vocab_size, ")");
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Fails unless `path` names a readable regular file; returns its size in bytes.
uint64_t checked_file_size(const std::string& path) {
  std::error_code error;
  auto status = std::filesystem::status(path, error);
  if (!std::filesystem::exists(status)) fail(path, ": no such file");
  if (!std::filesystem::is_regular_file(status)) fail(path, ": not a regular file");
  uint64_t size = std::filesystem::file_size(path, error);
  if (error) fail(path, ": cannot read size (", error.message(), ")");
  if (size == 0) fail(path, ": empty file");
  return size;
}

std::ifstream open_for_reading(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, ": cannot open for reading (", std::strerror(errno), ")");
  return in;
}

// `where` is "path:line" or "samples[i]": the prefix of every message about one sample.
void check_id(int64_t id, const char* field, size_t index, const DataOptions& options, const std::string& where) {
  if (id < 0) fail(where, ": ", field, "[", index, "] is ", id, ", ids must be >= 0");
  if (id >= options.vocab_size)
    fail(where, ": ", field, "[", index, "] is ", id, ", not < vocab_size ", options.vocab_size);
}

void check_label(int64_t label, size_t index, const DataOptions& options, const std::string& where) {
  if (label != kIgnoreLabel && (label < 0 || label >= options.vocab_size))
    fail(where, ": labels[", index, "] is ", label, ", must be -100 or in [0, ", options.vocab_size, ")");
}

// Checks lengths, then truncates or pads `sample` to seq_len (padding: pad_id with label -100). Adds the tokens kept to
// *real and those cut to *dropped.
void fit_sample(Sample& sample, const DataOptions& options, const std::string& where, int64_t* real, int64_t* dropped) {
  if (sample.input_ids.empty()) fail(where, ": input_ids is empty");
  if (sample.labels.size() != sample.input_ids.size())
    fail(where, ": labels has ", sample.labels.size(), " entries but input_ids has ", sample.input_ids.size());
  size_t seq_len = static_cast<size_t>(options.seq_len);
  size_t length = sample.input_ids.size();
  if (length > seq_len) {
    if (!options.truncate_long)
      fail(where, ": sample has ", length, " tokens, longer than seq_len ", seq_len,
           " (enable truncate_long to cut it)");
    *dropped += static_cast<int64_t>(length - seq_len);
    length = seq_len;
  }
  *real += static_cast<int64_t>(length);
  sample.input_ids.resize(seq_len, options.pad_id);
  sample.labels.resize(seq_len, kIgnoreLabel);
}

// nlohmann's parse message without its "[json.exception...] parse error at line 1," prefix (the line is ours to name).
std::string parse_problem(const json::parse_error& error) {
  std::string message = error.what();
  size_t column = message.find("column");
  return column == std::string::npos ? message : message.substr(column);
}

// Reads element `index` of array `field` as an integer, failing on floats, strings, booleans, ...
int64_t integer_at(const json& array, const char* field, size_t index, const std::string& where) {
  const json& value = array[index];
  if (value.is_number_unsigned() && value.get<uint64_t>() > uint64_t{std::numeric_limits<int64_t>::max()})
    fail(where, ": ", field, "[", index, "] is ", value.dump(), ", out of range");
  if (!value.is_number_integer()) fail(where, ": ", field, "[", index, "] is ", value.dump(), ", not an integer");
  return value.get<int64_t>();
}

const json& array_field(const json& object, const char* field, const std::string& where) {
  const json& value = object.at(field);
  if (!value.is_array()) fail(where, ": \"", field, "\" is not an array (found ", value.type_name(), ")");
  return value;
}

Sample parse_jsonl_line(const std::string& line, const DataOptions& options, const std::string& where) {
  json object;
  try {
    object = json::parse(line);
  } catch (const json::parse_error& error) {
    fail(where, ": malformed JSON at ", parse_problem(error));
  }
  if (!object.is_object()) fail(where, ": line is not a JSON object (found ", object.type_name(), ")");
  if (!object.contains("input_ids")) fail(where, ": missing \"input_ids\"");
  Sample sample;
  const json& ids = array_field(object, "input_ids", where);
  for (size_t i = 0; i < ids.size(); ++i) {
    int64_t id = integer_at(ids, "input_ids", i, where);
    check_id(id, "input_ids", i, options, where);
    sample.input_ids.push_back(static_cast<int32_t>(id));
  }
  if (!object.contains("labels")) {
    sample.labels = sample.input_ids;
    return sample;
  }
  const json& labels = array_field(object, "labels", where);
  for (size_t i = 0; i < labels.size(); ++i) {
    int64_t label = integer_at(labels, "labels", i, where);
    check_label(label, i, options, where);
    sample.labels.push_back(static_cast<int32_t>(label));
  }
  return sample;
}

bool is_blank(const std::string& line) {
  return std::all_of(line.begin(), line.end(), [](char c) { return c == ' ' || c == '\t' || c == '\r'; });
}

// Uniform in [0, 1) from the top 53 bits.
double unit(uint64_t bits) { return static_cast<double>(bits >> 11) * 0x1.0p-53; }

}  // namespace

TokenDataset TokenDataset::load(const std::string& path, const DataOptions& options) {
  check_options(options);
  uint64_t size = checked_file_size(path);
  std::ifstream in = open_for_reading(path);
  TokenDataset dataset;
  dataset.seq_len_ = options.seq_len;

  if (ends_with(path, ".jsonl")) {
    std::string line;
    for (int64_t line_number = 1; std::getline(in, line); ++line_number) {
      if (is_blank(line)) continue;
      std::string where = str(path, ":", line_number);
      Sample sample = parse_jsonl_line(line, options, where);
      fit_sample(sample, options, where, &dataset.real_tokens_, &dataset.dropped_tokens_);
      dataset.samples_.push_back(std::move(sample));
    }
    if (in.bad()) fail(path, ": read error (", std::strerror(errno), ")");
    if (dataset.samples_.empty()) fail(path, ": no samples (only blank lines)");
    return dataset;
  }

  if (size % 4 != 0)
    fail(path, ": size ", size, " bytes is not a multiple of 4 (a flat token file holds little-endian uint32 ids)");
  std::vector<unsigned char> bytes(size);
  if (!in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size)))
    fail(path, ": read error (", std::strerror(errno), ")");
  uint64_t count = size / 4;
  uint64_t seq_len = static_cast<uint64_t>(options.seq_len);
  if (count < seq_len) fail(path, ": ", count, " tokens, fewer than one seq_len window of ", seq_len);
  uint64_t windows = count / seq_len;
  dataset.samples_.resize(windows);
  for (uint64_t w = 0; w < windows; ++w) {
    Sample& sample = dataset.samples_[w];
    sample.input_ids.resize(seq_len);
    for (uint64_t t = 0; t < seq_len; ++t) {
      uint64_t token = w * seq_len + t;
      const unsigned char* b = &bytes[token * 4];
      uint32_t id = b[0] | (uint32_t{b[1]} << 8) | (uint32_t{b[2]} << 16) | (uint32_t{b[3]} << 24);
      if (id >= static_cast<uint32_t>(options.vocab_size))
        fail(path, ": token ", token, " (byte offset ", token * 4, ") is id ", id, ", not < vocab_size ",
             options.vocab_size);
      sample.input_ids[t] = static_cast<int32_t>(id);
    }
    sample.labels = sample.input_ids;
  }
  dataset.real_tokens_ = static_cast<int64_t>(windows * seq_len);
  dataset.dropped_tokens_ = static_cast<int64_t>(count - windows * seq_len);
  return dataset;
}

TokenDataset TokenDataset::from_samples(std::vector<Sample> samples, const DataOptions& options) {
  check_options(options);
  if (samples.empty()) fail("samples: no samples");
  TokenDataset dataset;
  dataset.seq_len_ = options.seq_len;
  for (size_t s = 0; s < samples.size(); ++s) {
    Sample& sample = samples[s];
    std::string where = str("samples[", s, "]");
    for (size_t i = 0; i < sample.input_ids.size(); ++i) check_id(sample.input_ids[i], "input_ids", i, options, where);
    if (sample.labels.empty()) sample.labels = sample.input_ids;
    for (size_t i = 0; i < sample.labels.size(); ++i) check_label(sample.labels[i], i, options, where);
    fit_sample(sample, options, where, &dataset.real_tokens_, &dataset.dropped_tokens_);
  }
  dataset.samples_ = std::move(samples);
  return dataset;
}

const Sample& TokenDataset::operator[](size_t index) const {
  MT_ASSERT(index < samples_.size());
  return samples_[index];
}

BatchSampler::BatchSampler(const TokenDataset& dataset, int batch_size, uint64_t seed, bool shuffle)
    : dataset_(&dataset), batch_size_(batch_size), seed_(seed), shuffle_(shuffle) {
  if (batch_size <= 0) fail("batch sampler: batch_size is ", batch_size, ", must be > 0");
  MT_ASSERT(dataset.size() > 0);
  start_epoch(0);
}

// This epoch's order: identity, or a Fisher-Yates shuffle driven by mt19937_64 seeded from (seed, epoch) alone, so any
// epoch can be recreated without replaying the ones before it.
void BatchSampler::start_epoch(int64_t epoch) {
  epoch_ = epoch;
  position_ = 0;
  order_.resize(dataset_->size());
  for (size_t i = 0; i < order_.size(); ++i) order_[i] = i;
  if (!shuffle_) return;
  std::mt19937_64 rng(mix64(seed_ ^ mix64(static_cast<uint64_t>(epoch))));
  for (size_t i = order_.size(); i > 1; --i) std::swap(order_[i - 1], order_[uniform_below(rng, i)]);
}

void BatchSampler::seek(int64_t epoch, size_t position) {
  if (epoch < 0 || position >= dataset_->size())
    fail("batch sampler: cannot resume at epoch ", epoch, " position ", position, " of a dataset of ", dataset_->size(),
         " samples");
  start_epoch(epoch);
  position_ = position;
}

Batch BatchSampler::next() {
  Batch batch;
  batch.batch_size = batch_size_;
  batch.seq_len = dataset_->seq_len();
  size_t cells = static_cast<size_t>(batch_size_) * static_cast<size_t>(batch.seq_len);
  batch.input_ids.reserve(cells);
  batch.labels.reserve(cells);
  for (int row = 0; row < batch_size_; ++row) {
    const Sample& sample = (*dataset_)[order_[position_]];
    batch.input_ids.insert(batch.input_ids.end(), sample.input_ids.begin(), sample.input_ids.end());
    batch.labels.insert(batch.labels.end(), sample.labels.begin(), sample.labels.end());
    if (++position_ == order_.size()) start_epoch(epoch_ + 1);
  }
  return batch;
}

std::vector<int32_t> generate_demo_tokens(int vocab_size, int64_t count, uint64_t seed) {
  if (vocab_size <= 0) fail("demo tokens: vocab_size is ", vocab_size, ", must be > 0");
  if (count < 0) fail("demo tokens: count is ", count, ", must be >= 0");
  const uint64_t vocab = static_cast<uint64_t>(vocab_size);
  constexpr int kSuccessors = 4;
  constexpr double kCumulative[kSuccessors] = {0.55, 0.80, 0.90, 0.95};  // successor slot probabilities; rest is noise
  constexpr int kPhrases = 8;
  constexpr double kPhraseRate = 0.02;  // chance, per generated step, of emitting a whole phrase

  // Successor k of token `b`: a hash of (seed, b, k), squared toward small ids so the unigram distribution is skewed.
  auto successor = [&](uint64_t b, uint64_t k) {
    double u = unit(mix64(seed ^ mix64(b * kSuccessors + k)));
    return static_cast<int32_t>(static_cast<uint64_t>(u * u * static_cast<double>(vocab)));
  };
  // Which successor slot is the favourite depends on the token before `b` (the order-2 part).
  auto rotation = [&](uint64_t a) { return mix64(~seed ^ mix64(a)) % kSuccessors; };

  std::mt19937_64 rng(mix64(seed));
  std::vector<std::vector<int32_t>> phrases(kPhrases);
  for (auto& phrase : phrases) {
    phrase.resize(6 + uniform_below(rng, 7));
    for (auto& id : phrase) id = static_cast<int32_t>(uniform_below(rng, vocab));
  }

  std::vector<int32_t> tokens;
  tokens.reserve(static_cast<size_t>(count));
  int32_t a = static_cast<int32_t>(uniform_below(rng, vocab));
  int32_t b = static_cast<int32_t>(uniform_below(rng, vocab));
  auto emit = [&](int32_t id) {
    if (static_cast<int64_t>(tokens.size()) == count) return;
    tokens.push_back(id);
    a = b;
    b = id;
  };
  while (static_cast<int64_t>(tokens.size()) < count) {
    if (unit(rng()) < kPhraseRate) {
      for (int32_t id : phrases[uniform_below(rng, kPhrases)]) emit(id);
      continue;
    }
    double u = unit(rng());
    int slot = 0;
    while (slot < kSuccessors && u >= kCumulative[slot]) ++slot;
    if (slot == kSuccessors) {
      emit(static_cast<int32_t>(uniform_below(rng, vocab)));
    } else {
      emit(successor(static_cast<uint64_t>(b), (static_cast<uint64_t>(slot) + rotation(a)) % kSuccessors));
    }
  }
  return tokens;
}

void write_token_file(const std::string& path, const std::vector<int32_t>& ids) {
  std::vector<unsigned char> bytes(ids.size() * 4);
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0) fail("writing ", path, ": ids[", i, "] is ", ids[i], ", ids must be >= 0");
    uint32_t id = static_cast<uint32_t>(ids[i]);
    for (int byte = 0; byte < 4; ++byte) bytes[i * 4 + byte] = static_cast<unsigned char>(id >> (8 * byte));
  }
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) fail(path, ": cannot open for writing (", std::strerror(errno), ")");
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) fail(path, ": write error (", std::strerror(errno), ")");
}

void write_token_jsonl(const std::string& path, const std::vector<int32_t>& ids, int seq_len) {
  if (seq_len <= 0) fail("writing ", path, ": seq_len is ", seq_len, ", must be > 0");
  std::ofstream out(path, std::ios::trunc);
  if (!out) fail(path, ": cannot open for writing (", std::strerror(errno), ")");
  for (size_t start = 0; start < ids.size(); start += static_cast<size_t>(seq_len)) {
    size_t end = std::min(ids.size(), start + static_cast<size_t>(seq_len));
    json line = {{"input_ids", std::vector<int32_t>(ids.begin() + start, ids.begin() + end)}};
    out << line.dump() << '\n';
  }
  out.close();
  if (!out) fail(path, ": write error (", std::strerror(errno), ")");
}

}  // namespace moetune
