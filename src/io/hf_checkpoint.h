// Why: moetune reads and writes Hugging Face model folders directly — no conversion step. Loading accepts either expert
// layout and any floating dtype, and checks that the checkpoint holds exactly the tensors the config implies, each with
// the right shape. Saving writes Transformers' per-expert layout (what save_pretrained writes) or the fused one, plus
// config.json and the tokenizer files of the source folder, atomically: into a temporary folder that is renamed into
// place only when complete.
#pragma once

#include <string>

#include "core/dtype.h"
#include "model/hf_names.h"

namespace moetune {

// Fills params (layout.total_floats() fp32 values) from the safetensors of `folder`. Throws Error naming the file and
// tensor on: a missing tensor, an unexpected one, a wrong shape, a non-floating dtype.
// Returns the expert layout found.
ExpertLayout load_hf_weights(const std::string& folder, const ModelConfig& config, const ParamLayout& layout,
                             float* params);

struct SaveOptions {
  ExpertLayout expert_layout = ExpertLayout::PerExpert;
  DType dtype = DType::F32;          // F32, BF16 or F16
  std::string copy_files_from;       // a model folder whose tokenizer/generation files are copied along (may be empty)
};

// Writes config.json + model.safetensors (+ copied files) into `folder`, atomically.
void save_hf_checkpoint(const std::string& folder, const ModelConfig& config, const ParamLayout& layout,
                        const float* params, const SaveOptions& options);

}  // namespace moetune
