// Why: see gpu_trainer.h.
#include "gpu/gpu_trainer.h"

#include <cmath>

#include "core/dtype.h"
#include "gpu/elementwise.h"

namespace moetune::cuda {

Recipe parse_recipe(const std::string& name) {
  if (name == "bf16") return Recipe::Bf16;
  if (name == "mixed") return Recipe::MixedMaster;
  fail("unknown precision recipe \"", name, "\" (expected bf16 or mixed)");
}

const char* recipe_name(Recipe recipe) { return recipe == Recipe::Bf16 ? "bf16" : "mixed"; }

GpuTrainer::GpuTrainer(const ModelConfig& config, const float* host_params, const TrainOptions& options, Recipe recipe,
                       int batch_size, int seq_len, uint64_t seed)
    : config_(config), layout_(config_), options_(options), recipe_(recipe), batch_size_(batch_size), seq_len_(seq_len) {
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  const size_t total = layout_.total_floats();
  params_ = DeviceBuffer<bf16>(total);
  grads_ = DeviceBuffer<bf16>(total);
  if (recipe_ == Recipe::Bf16) {
    m16_ = DeviceBuffer<bf16>(total);
    v16_ = DeviceBuffer<bf16>(total);
    m16_.zero();
    v16_.zero();
  } else {
    master_ = DeviceBuffer<float>(total);
    m32_ = DeviceBuffer<float>(total);
    v32_ = DeviceBuffer<float>(total);
    m32_.zero();
    v32_.zero();
  }
  if (host_params) {
    std::vector<bf16> converted(total);
    for (size_t i = 0; i < total; ++i) converted[i] = __float2bfloat16(host_params[i]);
    params_.upload(converted);
  } else {
    uint64_t stream_seed = seed;
    for (const ParamInfo& info : layout_.params()) {
      bf16* data = params_.data() + info.offset;
      const bool is_norm = info.shape.size() == 1 && info.name.find("norm") != std::string::npos;
      if (is_norm) fill_bf16(data, info.numel, 1.0f, stream_);
      else if (info.shape.size() == 1) fill_bf16(data, info.numel, 0.0f, stream_);
      else init_normal(data, info.numel, config_.initializer_range, ++stream_seed, stream_);
    }
  }
  if (recipe_ == Recipe::MixedMaster) {  // master weights: the exact fp32 values when given, else the bf16 init
    if (host_params) master_.upload(std::vector<float>(host_params, host_params + total));
    else convert_bf16_to_f32(master_.data(), params_.data(), total, stream_);
  }
  std::vector<AdamWSpan> spans;
  for (const ParamInfo& info : layout_.params()) spans.push_back({info.offset, info.numel, info.weight_decay});
  spans_ = DeviceBuffer<AdamWSpan>(spans);
  norm_result_ = DeviceBuffer<float>(1);
  norm_scratch_ = DeviceBuffer<float>(grad_norm_scratch_floats());
  weights_ = as_bf16(layout_.bind16(reinterpret_cast<uint16_t*>(params_.data())));
  grad_weights_ = as_bf16(layout_.bind16(reinterpret_cast<uint16_t*>(grads_.data())));
  engine_ = std::make_unique<GpuEngine>(config_, batch_size, seq_len, stream_);
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

GpuTrainer::~GpuTrainer() {
  engine_.reset();
  if (stream_) cudaStreamDestroy(stream_);
}

size_t GpuTrainer::parameter_bytes() const { return params_.size() * sizeof(bf16) + master_.size() * sizeof(float); }
size_t GpuTrainer::gradient_bytes() const { return grads_.size() * sizeof(bf16); }
size_t GpuTrainer::optimizer_bytes() const {
  return (m16_.size() + v16_.size()) * sizeof(bf16) + (m32_.size() + v32_.size()) * sizeof(float);
}

GpuLoss GpuTrainer::compute_gradients(const Batch& batch) {
  engine_->set_batch(batch.input_ids.data(), batch.labels.data());
  CUDA_CHECK(cudaMemsetAsync(grads_.data(), 0, grads_.size() * sizeof(bf16), stream_));
  const int64_t counted = count_label_positions(batch);
  const float ce_scale = counted > 0 ? 1.0f / static_cast<float>(counted) : 0.0f;
  const float aux_scale = options_.aux_loss ? config_.router_aux_loss_coef : 0.0f;
  engine_->run(weights_, &grad_weights_, ce_scale, aux_scale);
  return engine_->loss();
}

GpuLoss GpuTrainer::evaluate(const Batch& batch) {
  engine_->set_batch(batch.input_ids.data(), batch.labels.data());
  engine_->run(weights_, nullptr, 0.0f, 0.0f);
  return engine_->loss();
}

StepStats GpuTrainer::step(const Batch& batch) {
  if (batch.batch_size != batch_size_ || batch.seq_len != seq_len_)
    fail("batch of shape ", batch.batch_size, "x", batch.seq_len, " does not match the GPU trainer's ", batch_size_, "x", seq_len_);
  const GpuLoss parts = compute_gradients(batch);
  StepStats stats;
  stats.counted = parts.counted;
  stats.tokens = static_cast<int64_t>(batch.batch_size) * batch.seq_len;
  stats.ce_loss = parts.counted > 0 ? parts.ce_sum / static_cast<double>(parts.counted) : 0.0;
  stats.aux_loss = parts.aux;
  stats.loss = stats.ce_loss + (options_.aux_loss ? config_.router_aux_loss_coef * parts.aux : 0.0);

  engine_->mark_optimizer();
  grad_norm_squared(grads_.data(), grads_.size(), norm_result_.data(), norm_scratch_.data(), stream_);
  float norm_squared = 0.0f;
  CUDA_CHECK(cudaMemcpyAsync(&norm_squared, norm_result_.data(), sizeof(float), cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  stats.grad_norm = std::sqrt(static_cast<double>(norm_squared));
  if (!std::isfinite(stats.grad_norm))
    fail("step ", steps_done_ + 1, ": gradient norm is not finite (loss ", stats.loss, "); lower the learning rate");
  float grad_scale = 1.0f;
  if (options_.max_grad_norm > 0) {
    const double clip = options_.max_grad_norm / (stats.grad_norm + 1e-6);
    if (clip < 1.0) grad_scale = static_cast<float>(clip);
  }
  stats.lr = options_.lr * lr_multiplier(options_.schedule, steps_done_, options_.warmup_steps, options_.total_steps);
  ++steps_done_;
  const AdamWHyper hyper{stats.lr, options_.beta1, options_.beta2, options_.eps, options_.weight_decay, steps_done_};
  const int span_count = static_cast<int>(spans_.size());
  if (recipe_ == Recipe::Bf16) {
    adamw_bf16(params_.data(), grads_.data(), m16_.data(), v16_.data(), spans_.data(), span_count, params_.size(), hyper,
               grad_scale, stream_);
  } else {
    adamw_master(params_.data(), master_.data(), grads_.data(), m32_.data(), v32_.data(), spans_.data(), span_count,
                 params_.size(), hyper, grad_scale, stream_);
  }
  stats.step = steps_done_;
  return stats;
}

std::vector<float> GpuTrainer::download_params() const {
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (recipe_ == Recipe::MixedMaster) return master_.download();
  const std::vector<bf16> raw = params_.download();
  std::vector<float> out(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) out[i] = __bfloat162float(raw[i]);
  return out;
}

std::vector<float> GpuTrainer::download_grads() const {
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  const std::vector<bf16> raw = grads_.download();
  std::vector<float> out(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) out[i] = __bfloat162float(raw[i]);
  return out;
}

}  // namespace moetune::cuda
