// Why: `moetune train --data` and `moetune tokenize` take the same inputs (a JSONL file or folder, a format, a
// tokenizer folder, chat template arguments, a cache location, bad-sample policy); this turns them into an open dataset
// cache and its train/validation sample sets, so both commands (and library users) do it one way.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dataset/dataset_cache.h"
#include "dataset/sample_encoder.h"
#include "dataset/sequence_sampler.h"

namespace moetune {

// What --format auto means for `path`: a dataset cache ("cache", returned as Auto with *is_cache), a flat token file
// (any regular file not ending in .jsonl: Tokens), else the shape of the first JSONL record. An explicit format is kept.
DataFormat resolve_data_format(const std::string& path, DataFormat requested, bool* is_cache);

// Where --cache auto puts a cache: $MOETUNE_CACHE_DIR, else $XDG_CACHE_HOME/moetune, else ~/.cache/moetune, then
// datasets/<key>.mtds.
std::string default_cache_path(const std::string& key);

struct TextDataOptions {
  std::string data;                      // --data: JSONL file, folder of *.jsonl, or a cache file
  DataFormat format = DataFormat::Auto;  // text, prompt or chat (Auto: detected)
  std::string tokenizer;                 // folder with tokenizer.json (and the chat template); "" only for a cache file
  nlohmann::ordered_json template_kwargs = nlohmann::ordered_json::object();
  std::string cache = "auto";            // cache path, or "auto"
  CacheBuildOptions build;               // threads, skip_bad, progress
};

// The encoder and cache path for `options` (data must be JSONL, not a cache file).
std::unique_ptr<SampleEncoder> make_encoder(const TextDataOptions& options, std::vector<std::string>* files);

class TextDataset {
 public:
  // Opens (building when needed) the cache of options.data, or the cache file options.data itself. A cache that left
  // out bad samples is refused unless options.build.skip_bad (it names the first one). With a tokenizer folder given
  // for a cache file, the cache must have been made with the same tokenizer.json.
  static std::unique_ptr<TextDataset> open(const TextDataOptions& options);

  // Fits the samples to a sequence length and splits them (call before train()/validation()).
  void select(const SampleSetOptions& options);

  const DatasetCache& cache() const { return *cache_; }
  const SampleSet& train() const { return *train_; }
  const SampleSet* validation() const { return validation_.get(); }
  int32_t pad_id() const { return pad_id_; }
  bool built() const { return built_; }
  // Lines for the log: where the data is, what was left out and why.
  std::vector<std::string> describe() const;

 private:
  TextDataset() = default;
  std::unique_ptr<DatasetCache> cache_;
  std::unique_ptr<SampleSet> train_, validation_;
  int32_t pad_id_ = 0;
  bool built_ = false;
};

}  // namespace moetune
