// Why: fine-tuning data can be larger than memory and tokenizing it (chat templates included) costs minutes, so it is
// tokenized once, on every core, into a file that training memory-maps and reads in any order. The file is reused
// while nothing that decides its ids changes; its key hashes the data files' paths, sizes and modification times, the
// tokenizer.json bytes, the chat template and special tokens, the format, the template arguments and the encoder's
// rules (SampleEncoder::fingerprint), so a changed input rebuilds it. Options that only pick from it (sequence length,
// long-sample policy, validation split, packing) are applied when reading, so one cache serves them all.
//
// Layout (little-endian; every section 8-byte aligned):
//   [0, 128)        preamble: magic "moetune-dataset\0", u64 version, u64 data_offset, u64 data_bytes,
//                   u64 index_offset, u64 samples, u64 header_offset, u64 header_bytes, zeros
//   data            per sample: ids (int32 x length), then the loss mask (uint8 x length), padded to 4 bytes
//   index           per sample 24 bytes: u64 offset into data, u32 length, u32 file index, u64 line (1-based)
//   header (JSON)   {"format": "moetune-dataset-cache", "version", "key", "key_fields", "files", "samples", "tokens",
//                    "loss_tokens", "max_id", "max_length", "bad_samples": {"count", "examples": ["file:line: ..."]},
//                    "blank_lines"}
// The JSON sits after the arrays because its size is known last; the preamble says where.
//
// Building reads the JSONL files in order (blank lines skipped), in chunks, and encodes each chunk's lines on a pool of
// std::threads; results are written in input order, so the file is byte-identical for any thread count. A bad sample
// (SampleError) fails the build with "file:line: what" or, with skip_bad, is left out, counted and listed (the first 20)
// in the header. The file is written beside its final path and renamed into place, so a cache is complete or absent.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dataset/sample_encoder.h"

namespace moetune {

// The JSONL files of --data: the file itself, or every *.jsonl directly in the folder, sorted by name.
std::vector<std::string> list_data_files(const std::string& path);

// The format of a dataset: the shape of the first record of its first file (detect_format). Errors name file:line.
DataFormat detect_data_format(const std::vector<std::string>& files);

struct CacheBuildOptions {
  int threads = 0;           // 0: all cores (std::thread::hardware_concurrency)
  bool skip_bad = false;     // false: the first bad sample fails the build, naming its file and line
  bool progress = false;     // a progress bar on stderr
  size_t lines_per_chunk = 4096;
};

class DatasetCache {
 public:
  static constexpr uint64_t kVersion = 1;

  // What the cache of `files` encoded by `encoder` must match to be reused, and its hash.
  static nlohmann::ordered_json key_fields(const std::vector<std::string>& files, const SampleEncoder& encoder);
  static std::string key_of(const nlohmann::ordered_json& fields);

  // Writes the cache of `files` to `path`.
  static void build(const std::string& path, const std::vector<std::string>& files, const SampleEncoder& encoder,
                    const CacheBuildOptions& options);
  // Opens a cache file (validating its preamble, sections and header). Errors name the path.
  static DatasetCache open(const std::string& path);
  // Opens `path` when it holds the cache of `files` under `encoder` (same key), else builds it first. *built says which.
  static DatasetCache open_or_build(const std::string& path, const std::vector<std::string>& files,
                                    const SampleEncoder& encoder, const CacheBuildOptions& options, bool* built);
  // True when `path` starts with the cache magic.
  static bool is_cache_file(const std::string& path);

  DatasetCache(DatasetCache&& other) noexcept;
  DatasetCache& operator=(DatasetCache&& other) noexcept;
  DatasetCache(const DatasetCache&) = delete;
  DatasetCache& operator=(const DatasetCache&) = delete;
  ~DatasetCache();

  struct SampleView {
    const int32_t* ids;
    const uint8_t* loss;
    uint32_t length;
    uint32_t file;
    uint64_t line;
  };
  size_t size() const { return samples_; }
  SampleView sample(size_t index) const;
  // "file:line" of a sample (for messages).
  std::string where(size_t index) const;

  const std::string& path() const { return path_; }
  const nlohmann::ordered_json& header() const { return header_; }
  const std::string& key() const { return key_; }
  int64_t bad_count() const;
  int32_t max_id() const;

 private:
  DatasetCache() = default;
  void release();

  std::string path_;
  const unsigned char* map_ = nullptr;
  size_t map_bytes_ = 0;
  const unsigned char* data_ = nullptr;
  const unsigned char* index_ = nullptr;
  size_t samples_ = 0;
  uint64_t data_bytes_ = 0;
  nlohmann::ordered_json header_;
  std::string key_;
  std::vector<std::string> files_;
};

}  // namespace moetune
