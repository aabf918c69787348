// Why: named model geometries for benchmarks, so the figures in docs/PERFORMANCE.md are reproducible by name and match
// the baseline's Transformers configs exactly (see ../shared/GPU.md).
#pragma once

#include <string>

#include "model/config.h"

namespace moetune {

// "qwen3-30b-a3b-slice" (8 layers), "qwen3-30b-a3b" (48 layers), "olmoe-1b-7b", "tiny" (the built-in demo model).
// num_layers > 0 overrides the layer count. Throws Error naming the known geometries for an unknown name.
ModelConfig named_geometry(const std::string& name, int num_layers = 0);

}  // namespace moetune
