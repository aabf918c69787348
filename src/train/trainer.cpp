// Why: see trainer.h. The loss of a step is normalised by the labelled positions of all its micro-batches (as
// Transformers' Trainer does with num_items_in_batch), the load-balancing loss by the number of micro-batches.
#include "train/trainer.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "core/error.h"
#include "ops/cpu/adamw.h"

namespace moetune {

int64_t count_label_positions(const Batch& batch) {
  int64_t counted = 0;
  for (int b = 0; b < batch.batch_size; ++b)
    for (int t = 1; t < batch.seq_len; ++t) counted += batch.labels[static_cast<size_t>(b) * batch.seq_len + t] != kIgnoreLabel;
  return counted;
}

Trainer::Trainer(Model& model, const TrainOptions& options, int batch_size, int seq_len)
    : model_(model),
      options_(options),
      engine_(model.config(), batch_size, seq_len),
      grads_(model.buffer_size(), 0.0f),
      state_{0, std::vector<float>(model.buffer_size(), 0.0f), std::vector<float>(model.buffer_size(), 0.0f)} {
  if (options.lr < 0 || options.beta1 < 0 || options.beta1 >= 1 || options.beta2 < 0 || options.beta2 >= 1 ||
      options.eps <= 0 || options.weight_decay < 0 || options.max_grad_norm < 0)
    fail("invalid optimizer settings (need lr >= 0, 0 <= betas < 1, eps > 0, weight decay >= 0, max grad norm >= 0)");
}

void Trainer::load_state(TrainState state) {
  if (state.step < 0) fail("optimizer state: step is ", state.step, ", must be >= 0");
  if (state.exp_avg.size() != grads_.size() || state.exp_avg_sq.size() != grads_.size())
    fail("optimizer state: moments of ", state.exp_avg.size(), " and ", state.exp_avg_sq.size(),
         " values do not match the model's ", grads_.size());
  state_ = std::move(state);
}

void Trainer::check_batch(const Batch& batch) const {
  if (batch.batch_size != engine_.batch() || batch.seq_len != engine_.seq_len())
    fail("batch of shape ", batch.batch_size, "x", batch.seq_len, " does not match the trainer's ", engine_.batch(), "x",
         engine_.seq_len());
  const int vocab = model_.config().vocab_size;
  for (int32_t id : batch.input_ids)
    if (id < 0 || id >= vocab) fail("token id ", id, " is outside the model's vocabulary [0, ", vocab, ")");
  const size_t cells = static_cast<size_t>(batch.batch_size) * static_cast<size_t>(batch.seq_len);
  if (batch.input_ids.size() != cells || batch.labels.size() != cells)
    fail("batch of shape ", batch.batch_size, "x", batch.seq_len, " holds ", batch.input_ids.size(), " ids and ",
         batch.labels.size(), " labels");
  if (batch.positions.empty() != batch.doc_start.empty() ||
      (!batch.positions.empty() && (batch.positions.size() != cells || batch.doc_start.size() != cells)))
    fail("packed batch: positions and doc_start must both have ", cells, " entries (or both be empty)");
  for (size_t cell = 0; cell < batch.doc_start.size(); ++cell) {
    const int t = static_cast<int>(cell % static_cast<size_t>(batch.seq_len));
    if (batch.doc_start[cell] < 0 || batch.doc_start[cell] > t || batch.positions[cell] < 0)
      fail("packed batch: token ", cell, " has doc_start ", batch.doc_start[cell], " and position ", batch.positions[cell],
           " (need 0 <= doc_start <= its column and position >= 0)");
  }
}

LossParts Trainer::forward(const Batch& batch) {
  return engine_.forward(model_.weights(), batch.input_ids.data(), batch.labels.data(),
                         batch.packed() ? batch.positions.data() : nullptr,
                         batch.packed() ? batch.doc_start.data() : nullptr);
}

LossParts Trainer::evaluate(const Batch& batch) {
  check_batch(batch);
  return forward(batch);
}

LossParts Trainer::compute_gradients(const Batch& batch) {
  check_batch(batch);
  std::fill(grads_.begin(), grads_.end(), 0.0f);
  const ModelWeights weights = model_.weights();
  const LossParts parts = forward(batch);
  const float ce_scale = parts.counted > 0 ? 1.0f / static_cast<float>(parts.counted) : 0.0f;
  const float aux_scale = options_.aux_loss ? model_.config().router_aux_loss_coef : 0.0f;
  engine_.backward(weights, model_.layout().bind(grads_.data()), ce_scale, aux_scale);
  return parts;
}

StepStats Trainer::step(const std::vector<Batch>& micro_batches) {
  if (micro_batches.empty()) fail("a training step needs at least one micro-batch");
  for (const Batch& batch : micro_batches) check_batch(batch);
  int64_t counted = 0;
  for (const Batch& batch : micro_batches) counted += count_label_positions(batch);

  std::fill(grads_.begin(), grads_.end(), 0.0f);
  const ModelWeights weights = model_.weights();
  const ModelWeights grads = model_.layout().bind(grads_.data());
  const float ce_scale = counted > 0 ? 1.0f / static_cast<float>(counted) : 0.0f;
  const float aux_coef = options_.aux_loss ? model_.config().router_aux_loss_coef : 0.0f;
  const float aux_scale = aux_coef / static_cast<float>(micro_batches.size());

  StepStats stats;
  double ce_sum = 0.0, aux_sum = 0.0;
  for (const Batch& batch : micro_batches) {
    const LossParts parts = forward(batch);
    engine_.backward(weights, grads, ce_scale, aux_scale);
    ce_sum += parts.ce_sum;
    aux_sum += parts.aux;
    stats.tokens += static_cast<int64_t>(batch.batch_size) * batch.seq_len;
  }
  stats.counted = counted;
  stats.ce_loss = counted > 0 ? ce_sum / static_cast<double>(counted) : 0.0;
  stats.aux_loss = aux_sum / static_cast<double>(micro_batches.size());
  stats.loss = stats.ce_loss + aux_coef * stats.aux_loss;

  stats.grad_norm = std::sqrt(cpu::grad_norm_squared(grads_.data(), grads_.size()));
  if (!std::isfinite(stats.grad_norm))
    fail("step ", state_.step + 1, ": gradient norm is not finite (loss ", stats.loss, "); lower the learning rate");
  if (options_.max_grad_norm > 0) {
    const double clip = options_.max_grad_norm / (stats.grad_norm + 1e-6);
    if (clip < 1.0) cpu::scale_in_place(grads_.data(), grads_.size(), static_cast<float>(clip));
  }

  stats.lr = options_.lr * lr_multiplier(options_.schedule, state_.step, options_.warmup_steps, options_.total_steps);
  ++state_.step;
  const cpu::AdamWHyper hyper{stats.lr, options_.beta1, options_.beta2, options_.eps, options_.weight_decay, state_.step};
  float* params = model_.params();
  for (const ParamInfo& info : model_.layout().params())
    cpu::adamw_update(params + info.offset, grads_.data() + info.offset, state_.exp_avg.data() + info.offset,
                      state_.exp_avg_sq.data() + info.offset, info.numel, hyper, info.weight_decay);
  stats.step = state_.step;
  return stats;
}

}  // namespace moetune
