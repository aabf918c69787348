// Why: one optimizer step = forward/backward over the micro-batches of a step (gradient accumulation), global gradient
// norm and clipping, the learning-rate schedule and AdamW — the loop a user would otherwise write around PyTorch.
// Gradients and AdamW moments live in their own arenas (flat buffers with the parameter layout). The optimizer state
// (moments + step count) can be taken out and put back (TrainState), which is what a checkpoint needs besides the
// parameters to continue a run bit-identically; train/train_state.h writes it to disk.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "api/model.h"
#include "model/cpu_engine.h"
#include "train/data.h"
#include "train/schedule.h"

namespace moetune {

struct TrainOptions {
  long total_steps = 100;       // for the schedule
  double lr = 1e-3;
  long warmup_steps = 0;
  Schedule schedule = Schedule::Cosine;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0.0;    // applied to matrices only (biases and norm weights never decay)
  double max_grad_norm = 1.0;   // 0 disables clipping
  bool aux_loss = true;         // add router_aux_loss_coef * load-balancing loss (Transformers: output_router_logits)
};

struct StepStats {
  long step = 0;            // 1-based number of this optimizer step
  double loss = 0.0;        // ce_loss + router_aux_loss_coef * aux_loss (aux only when enabled)
  double ce_loss = 0.0;     // mean token cross-entropy over the step's counted tokens
  double aux_loss = 0.0;    // mean load-balancing loss over the micro-batches
  double grad_norm = 0.0;   // before clipping
  double lr = 0.0;          // learning rate used by this update
  int64_t tokens = 0;       // tokens processed (all positions)
  int64_t counted = 0;      // positions that carried a label
};

// Everything of the optimizer that outlives a step, device-neutral (fp32 moments in the parameter layout's order, gaps
// included, so the GPU trainer can use the same format).
struct TrainState {
  long step = 0;                   // optimizer steps taken (the next update is step + 1)
  std::vector<float> exp_avg;      // (layout.total_floats()) AdamW first moments
  std::vector<float> exp_avg_sq;   // (layout.total_floats()) AdamW second moments
};

class Trainer {
 public:
  Trainer(Model& model, const TrainOptions& options, int batch_size, int seq_len);

  // One optimizer step over the given micro-batches (all of shape batch_size x seq_len; packed or not, see Batch).
  StepStats step(const std::vector<Batch>& micro_batches);
  // Loss of one batch without touching gradients or parameters.
  LossParts evaluate(const Batch& batch);
  // Forward + backward of one batch into the (zeroed) gradient buffer, without an update: returns the loss parts.
  LossParts compute_gradients(const Batch& batch);

  const float* grads() const { return grads_.data(); }
  long steps_done() const { return state_.step; }

  // The optimizer state after the last step.
  const TrainState& state() const { return state_; }
  // Replaces the optimizer state (resuming): the moments must have the model's buffer size; throws Error otherwise.
  void load_state(TrainState state);

 private:
  void check_batch(const Batch& batch) const;
  LossParts forward(const Batch& batch);  // the engine's forward, packed or not

  Model& model_;
  TrainOptions options_;
  CpuEngine engine_;
  std::vector<float> grads_;       // gradient arena (layout.total_floats())
  TrainState state_;               // AdamW moments (two arenas) and the step count
};

// Positions of a batch that carry a label after the shift (the label of position t is labels[t + 1]).
int64_t count_label_positions(const Batch& batch);

}  // namespace moetune
