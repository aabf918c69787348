// Why: see model.h.
#include "api/model.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <utility>

#include "core/error.h"

namespace moetune {

Model::Model(const ModelConfig& config)
    : config_(config), layout_(std::make_unique<ParamLayout>(config_)), params_(layout_->total_floats(), 0.0f) {}

Model Model::from_pretrained(const std::string& folder) {
  Model model(load_config(folder));
  load_hf_weights(folder, model.config_, *model.layout_, model.params_.data());
  model.source_folder_ = folder;
  return model;
}

Model Model::from_config(const ModelConfig& config, uint64_t seed) {
  Model model(config);
  std::mt19937_64 generator(seed);
  // Box-Muller on 53-bit uniforms: the same numbers on every platform (std::normal_distribution is not portable).
  auto uniform = [&] { return (static_cast<double>(generator() >> 11) + 0.5) * 0x1.0p-53; };
  for (const ParamInfo& info : model.layout_->params()) {
    float* data = model.params_.data() + info.offset;
    const bool is_norm = info.shape.size() == 1 && info.name.find("norm") != std::string::npos;
    for (size_t i = 0; i < info.numel; ++i) {
      if (is_norm) {
        data[i] = 1.0f;
      } else if (info.shape.size() == 1) {
        data[i] = 0.0f;  // biases
      } else {
        const double radius = std::sqrt(-2.0 * std::log(uniform()));
        data[i] = static_cast<float>(config.initializer_range * radius * std::cos(2.0 * M_PI * uniform()));
      }
    }
  }
  if (config.padding_idx >= 0) {  // nn.Embedding(padding_idx) starts that row at zero
    float* row = model.weights().embed + static_cast<size_t>(config.padding_idx) * config.hidden_size;
    std::fill(row, row + config.hidden_size, 0.0f);
  }
  return model;
}

Model::Model(const ModelConfig& config, std::vector<float> params)
    : config_(config), layout_(std::make_unique<ParamLayout>(config_)), params_(std::move(params)) {
  if (params_.size() != layout_->total_floats())
    fail("Model: ", params_.size(), " parameter values for a layout of ", layout_->total_floats());
}

Model Model::from_values(const ModelConfig& config, std::vector<float> params, std::string source_folder) {
  Model model(config, std::move(params));
  model.source_folder_ = std::move(source_folder);
  return model;
}

void Model::save_pretrained(const std::string& folder, SaveOptions options) const {
  if (options.copy_files_from.empty()) options.copy_files_from = source_folder_;
  save_hf_checkpoint(folder, config_, *layout_, params_.data(), options);
}

}  // namespace moetune
