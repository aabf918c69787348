// Why: the library's entry point, in the spirit of Transformers' from_pretrained: a Model owns its config, its
// parameter layout and one flat fp32 parameter buffer (the parameter arena) and can be saved back as a Hugging Face
// folder. Training lives in train/trainer.h; the CLI is a thin layer over both.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/hf_checkpoint.h"
#include "model/config.h"
#include "model/weights.h"

namespace moetune {

class Model {
 public:
  // Reads <folder>/config.json and its safetensors (one file or an index with shards, either expert layout).
  static Model from_pretrained(const std::string& folder);
  // Random initialisation as Transformers' _init_weights does it: matrices ~ N(0, initializer_range), norms = 1,
  // biases = 0 (same distribution, not the same numbers: the generator is moetune's own, seeded).
  static Model from_config(const ModelConfig& config, uint64_t seed);
  // A model over values read elsewhere (a training checkpoint's weights, train/train_state.h), taken without a copy:
  // `params` holds ParamLayout(config).total_floats() fp32 values (else Error), alignment gaps zero. source_folder:
  // where they came from (its tokenizer files go along on save), "" for nowhere.
  static Model from_values(const ModelConfig& config, std::vector<float> params, std::string source_folder = "");

  const ModelConfig& config() const { return config_; }
  const ParamLayout& layout() const { return *layout_; }
  float* params() { return params_.data(); }
  const float* params() const { return params_.data(); }
  ModelWeights weights() { return layout_->bind(params_.data()); }
  // Elements of the parameter buffer: every parameter plus the alignment gaps of the layout (which stay zero).
  size_t buffer_size() const { return params_.size(); }
  size_t parameter_count() const { return layout_->parameter_count(); }
  // The folder the model was loaded from ("" when built from a config).
  const std::string& source_folder() const { return source_folder_; }

  // Writes a Hugging Face model folder (atomically); tokenizer files of the source folder are copied along.
  void save_pretrained(const std::string& folder, SaveOptions options = {}) const;

 private:
  explicit Model(const ModelConfig& config);
  Model(const ModelConfig& config, std::vector<float> params);  // params: the layout's size (else Error)

  ModelConfig config_;
  std::unique_ptr<ParamLayout> layout_;
  std::vector<float> params_;  // (layout.total_floats()) the parameter arena
  std::string source_folder_;
};

}  // namespace moetune
