// Why: the GPU trainer's optimizer state in and out of the device-neutral checkpoint format (train/trainer.h
// TrainState); see the top of gpu_trainer.h for why a resumed run is exact. With ZeRO-1 the sharded state is gathered
// to and cut from the same full format (gpu/zero_optimizer.h).
#include "core/error.h"
#include "gpu/gpu_trainer.h"
#include "gpu/zero_optimizer.h"

namespace moetune::cuda {

namespace {

std::vector<float> widen(const DeviceBuffer<bf16>& device) {
  const std::vector<bf16> raw = device.download();
  std::vector<float> out(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) out[i] = __bfloat162float(raw[i]);
  return out;
}

void upload_rounded(DeviceBuffer<bf16>& device, const std::vector<float>& values) {
  std::vector<bf16> rounded(values.size());
  for (size_t i = 0; i < values.size(); ++i) rounded[i] = __float2bfloat16(values[i]);  // round to nearest even
  device.upload(rounded);
}

}  // namespace

TrainState GpuTrainer::export_state(bool keep) const {
  require_training("export_state");
  synchronize();
  TrainState state;
  state.step = steps_done_;
  if (zero_) {
    zero_->export_moments(layout_.total_floats(), state.exp_avg, state.exp_avg_sq, keep, stream_);
  } else if (keep && gpu_.recipe == Recipe::Bf16) {
    state.exp_avg = widen(m16_);
    state.exp_avg_sq = widen(v16_);
  } else if (keep) {
    state.exp_avg = m32_.download();
    state.exp_avg_sq = v32_.download();
  }
  return state;
}

void GpuTrainer::import_state(const TrainState& state) {
  require_training("import_state");
  const size_t total = layout_.total_floats();
  if (state.exp_avg.size() != total || state.exp_avg_sq.size() != total)
    fail("optimizer state of ", state.exp_avg.size(), " and ", state.exp_avg_sq.size(),
         " values does not match the model's ", total, " (a checkpoint of another model?)");
  if (state.step < 0) fail("optimizer state at step ", state.step, ", must be >= 0");
  synchronize();  // the uploads below are synchronous copies that the non-blocking streams do not order
  if (zero_) {
    zero_->import_moments(state.exp_avg, state.exp_avg_sq);
  } else if (gpu_.recipe == Recipe::Bf16) {
    upload_rounded(m16_, state.exp_avg);
    upload_rounded(v16_, state.exp_avg_sq);
  } else {
    m32_.upload(state.exp_avg);
    v32_.upload(state.exp_avg_sq);
  }
  steps_done_ = state.step;
}

}  // namespace moetune::cuda
