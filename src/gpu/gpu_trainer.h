// Why: training on one GPU: the parameter, gradient and optimizer-state arenas (one device allocation each, with the
// CPU layout's offsets), the optimizer step (global grad norm, clipping, AdamW over the flat buffers) and the two
// precision recipes: (a) bf16 parameters, gradients and AdamW states — what Transformers' bf16 baseline does;
// (b) bf16 parameters and gradients with fp32 master weights and fp32 AdamW states (standard mixed precision).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "gpu/gpu_engine.h"
#include "ops/cuda/adamw.h"
#include "ops/cuda/device_buffer.h"
#include "train/data.h"
#include "train/trainer.h"

namespace moetune::cuda {

enum class Recipe { Bf16, MixedMaster };
Recipe parse_recipe(const std::string& name);  // "bf16" | "mixed"
const char* recipe_name(Recipe recipe);

class GpuTrainer {
 public:
  // host_params: fp32 parameters in `layout` order, or nullptr for a random initialisation on the device (norms 1,
  // biases 0, matrices N(0, initializer_range), seeded).
  GpuTrainer(const ModelConfig& config, const float* host_params, const TrainOptions& options, Recipe recipe,
             int batch_size, int seq_len, uint64_t seed = 0);
  ~GpuTrainer();

  StepStats step(const Batch& batch);
  // Forward + backward into zeroed gradients, no update (for tests); returns the loss parts.
  GpuLoss compute_gradients(const Batch& batch);
  GpuLoss evaluate(const Batch& batch);

  std::vector<float> download_params() const;  // fp32, layout order
  std::vector<float> download_grads() const;   // fp32, layout order
  GpuEngine& engine() { return *engine_; }
  const ParamLayout& layout() const { return layout_; }
  size_t parameter_bytes() const;
  size_t gradient_bytes() const;
  size_t optimizer_bytes() const;

 private:
  ModelConfig config_;
  ParamLayout layout_;
  TrainOptions options_;
  Recipe recipe_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<GpuEngine> engine_;
  DeviceBuffer<bf16> params_, grads_;
  DeviceBuffer<float> master_;                 // recipe (b) only
  DeviceBuffer<bf16> m16_, v16_;               // recipe (a)
  DeviceBuffer<float> m32_, v32_;              // recipe (b)
  DeviceBuffer<AdamWSpan> spans_;
  DeviceBuffer<float> norm_result_, norm_scratch_;
  GpuWeights weights_, grad_weights_;
  long steps_done_ = 0;
  int batch_size_, seq_len_;
};

// Fills a bf16 buffer with N(0, std) from a counter-based generator (same numbers for the same seed and offset).
void init_normal(bf16* data, size_t count, float std, uint64_t seed, cudaStream_t stream);
void fill_bf16(bf16* data, size_t count, float value, cudaStream_t stream);

}  // namespace moetune::cuda
