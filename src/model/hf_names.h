// Why: Hugging Face checkpoints name tensors per family and store experts either per expert
// (mlp.experts.{e}.gate_proj.weight; Mixtral: block_sparse_moe.experts.{e}.w1.weight) or fused
// (mlp.experts.gate_up_proj (E, 2I, H)). Every such tensor is a contiguous slice of one moetune parameter; this file
// lists them, so loading, saving and comparing with Transformers all use one table.
#pragma once

#include <string>
#include <vector>

#include "model/weights.h"

namespace moetune {

enum class ExpertLayout {
  PerExpert,  // what Transformers' save_pretrained writes
  Fused,      // Transformers v5's in-memory layout (also the names of its named_parameters())
};

struct HfTensor {
  std::string name;
  std::vector<int64_t> shape;
  size_t offset = 0;  // in floats, into the flat parameter buffer
  size_t numel = 0;
};

std::vector<HfTensor> hf_tensors(const ModelConfig& config, const ParamLayout& layout, ExpertLayout expert_layout);

}  // namespace moetune
