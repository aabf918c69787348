// Why: see text_dataset.h.
#include "dataset/text_dataset.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "core/error.h"

namespace moetune {

namespace fs = std::filesystem;

namespace {

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string count(int64_t n) {
  std::string digits = std::to_string(n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

}  // namespace

DataFormat resolve_data_format(const std::string& path, DataFormat requested, bool* is_cache) {
  *is_cache = false;
  std::error_code error;
  const bool regular = fs::is_regular_file(path, error);
  if (regular && DatasetCache::is_cache_file(path)) {
    *is_cache = true;
    return requested;
  }
  if (requested != DataFormat::Auto) return requested;
  if (regular && !ends_with(path, ".jsonl")) return DataFormat::Tokens;
  return detect_data_format(list_data_files(path));
}

std::string default_cache_path(const std::string& key) {
  fs::path root;
  if (const char* dir = std::getenv("MOETUNE_CACHE_DIR"); dir && *dir) {
    root = dir;
  } else if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg) {
    root = fs::path(xdg) / "moetune";
  } else if (const char* home = std::getenv("HOME"); home && *home) {
    root = fs::path(home) / ".cache" / "moetune";
  } else {
    root = fs::temp_directory_path() / "moetune-cache";
  }
  return (root / "datasets" / (key + ".mtds")).string();
}

std::unique_ptr<SampleEncoder> make_encoder(const TextDataOptions& options, std::vector<std::string>* files) {
  *files = list_data_files(options.data);
  DataFormat format = options.format;
  if (format == DataFormat::Auto) format = detect_data_format(*files);
  if (format == DataFormat::Tokens)
    fail(options.data, ": token-id data (\"input_ids\") is read as it is, not tokenized (use --format tokens)");
  if (options.tokenizer.empty())
    fail(options.data, ": ", data_format_name(format), " data needs a tokenizer: give --model (or --tokenizer) a folder "
         "with tokenizer.json or tokenizer.model");
  return std::make_unique<SampleEncoder>(options.tokenizer, format, options.template_kwargs);
}

std::unique_ptr<TextDataset> TextDataset::open(const TextDataOptions& options) {
  std::unique_ptr<TextDataset> dataset(new TextDataset());
  bool is_cache = false;
  resolve_data_format(options.data, options.format, &is_cache);
  if (is_cache) {
    dataset->cache_ = std::make_unique<DatasetCache>(DatasetCache::open(options.data));
    const nlohmann::ordered_json& fields = dataset->cache_->header()["key_fields"];
    if (!options.tokenizer.empty() && (fs::exists(fs::path(options.tokenizer) / "tokenizer.json") ||
                                       fs::exists(fs::path(options.tokenizer) / "tokenizer.model"))) {
      const std::string expected = fields["encoder"].value("tokenizer_json_fnv1a64", "");
      if (hex64(tokenizer_fingerprint(options.tokenizer)) != expected)
        fail(options.data, ": this cache was tokenized with another tokenizer than ",
             Tokenizer::file_in_folder(options.tokenizer), " (rebuild it with moetune tokenize)");
    }
    if (options.format != DataFormat::Auto &&
        dataset->cache_->header().value("data_format", "") != data_format_name(options.format))
      fail(options.data, ": the cache holds ", dataset->cache_->header().value("data_format", "?"), " data, not ",
           data_format_name(options.format));
  } else {
    std::vector<std::string> files;
    const std::unique_ptr<SampleEncoder> encoder = make_encoder(options, &files);
    const std::string path =
        options.cache == "auto" ? default_cache_path(DatasetCache::key_of(DatasetCache::key_fields(files, *encoder)))
                                : options.cache;
    dataset->cache_ = std::make_unique<DatasetCache>(
        DatasetCache::open_or_build(path, files, *encoder, options.build, &dataset->built_));
  }
  const DatasetCache& cache = *dataset->cache_;
  if (cache.bad_count() > 0 && !options.build.skip_bad) {
    const auto& examples = cache.header()["bad_samples"]["examples"];
    fail(examples.empty() ? cache.path() : examples[0].get<std::string>(), " (", cache.bad_count(),
         " bad samples in the data; --bad-samples skip leaves them out)");
  }
  dataset->pad_id_ = cache.header().value("pad_id", 0);
  return dataset;
}

void TextDataset::select(const SampleSetOptions& options) {
  train_ = std::make_unique<SampleSet>(*cache_, Split::Train, options);
  if (train_->size() == 0) fail(cache_->path(), ": no training sample left (see --long-samples and --val-fraction)");
  validation_.reset();
  if (options.val_fraction > 0) {
    validation_ = std::make_unique<SampleSet>(*cache_, Split::Validation, options);
    if (validation_->size() == 0)
      fail(cache_->path(), ": --val-fraction ", options.val_fraction, " holds out none of the ", cache_->size(),
           " samples");
  }
}

std::vector<std::string> TextDataset::describe() const {
  const nlohmann::ordered_json& h = cache_->header();
  std::vector<std::string> lines;
  lines.push_back(str("data: ", h.value("data_format", "?"), ", ", count(static_cast<int64_t>(cache_->size())),
                      " samples, ", count(h.value("tokens", int64_t{0})), " tokens (",
                      count(h.value("loss_tokens", int64_t{0})), " with loss), cache ", cache_->path(),
                      built_ ? " (built now)" : " (reused)"));
  const int64_t bad = cache_->bad_count();
  if (bad > 0) {
    std::string line = str("data: ", count(bad), " bad samples left out (--bad-samples skip)");
    const auto& examples = h["bad_samples"]["examples"];
    for (size_t i = 0; i < examples.size() && i < 5; ++i) line += "\n  " + examples[i].get<std::string>();
    if (bad > 5) line += str("\n  ... (", examples.size(), " listed in the cache header)");
    lines.push_back(line);
  }
  if (train_) {
    auto set_line = [&](const char* name, const SampleSet& set) {
      std::string line = str("data: ", name, " ", count(static_cast<int64_t>(set.size())), " samples, ",
                             count(set.tokens()), " tokens");
      if (set.truncated() > 0)
        line += str(", ", count(set.truncated()), " truncated to --seq-len (", count(set.truncated_tokens()),
                    " tokens cut)");
      if (set.dropped_long() > 0) line += str(", ", count(set.dropped_long()), " longer than --seq-len dropped");
      if (set.dropped_untrained() > 0)
        line += str(", ", count(set.dropped_untrained()), " dropped (no trained token left)");
      for (const std::string& example : set.examples()) line += "\n  " + example;
      return line;
    };
    lines.push_back(set_line("train", *train_));
    if (validation_) lines.push_back(set_line("validation", *validation_));
  }
  return lines;
}

}  // namespace moetune
