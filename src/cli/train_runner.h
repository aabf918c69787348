// Why: `moetune train` runs the same loop on the CPU reference engine, on one GPU or on one GPU of many; this is the
// seam. RunPlace is where this process stands in a run of several (its rank, the EP x DP layout, its expert shard of
// the config, the NCCL communicators, a barrier and the agreement on stop signals); Runner is the engine behind the
// calls the loop makes (step, evaluate, the values this rank writes of a checkpoint, the optimizer state it resumes).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "api/model.h"
#include "cli/args.h"
#include "cli/rank_agreement.h"
#include "core/error.h"
#include "io/checkpoint_writer.h"
#include "parallel/expert_shard.h"
#include "parallel/topology.h"
#include "train/data.h"
#include "train/trainer.h"

#ifdef MOETUNE_HAVE_CUDA
#include "parallel/nccl_comm.h"
#endif

namespace moetune::cli {

class RunPlace {
 public:
  RunPlace(const parallel::ProcessGroupInfo& group, int ep, int dp, const ModelConfig& config)
      : group_(group), layout_(parallel::make_parallel_layout(ep, dp, group, config.num_experts)), full_(config),
        local_(config) {
    if (layout_.ep > 1) {
      const parallel::ExpertRange range = layout_.owned_experts(group.rank);
      local_ = parallel::expert_shard_config(config, range.begin, range.count());
    }
#ifdef MOETUNE_HAVE_CUDA
    if (world() > 1) comms_ = parallel::ep_dp_comms(parallel::NcclComm::world(group), layout_);
#else
    if (world() > 1) fail("this moetune was built without CUDA; a run of several processes needs --device cuda");
#endif
  }
  bool rank0() const { return group_.rank == 0; }
  int rank() const { return group_.rank; }
  int world() const { return group_.world_size; }
  const parallel::ParallelLayout& layout() const { return layout_; }
  const ModelConfig& full_config() const { return full_; }
  const ModelConfig& local_config() const { return local_; }  // this rank's experts (the full config without EP)
  // Returns once every rank got here (at once with one process).
  void barrier() const {
#ifdef MOETUNE_HAVE_CUDA
    if (world() > 1) cli::barrier(comms_.world);
#endif
  }
  // The stop signal any rank caught (the largest number), so that every rank stops after the same step.
  int agreed_signal(int caught) const {
#ifdef MOETUNE_HAVE_CUDA
    if (world() > 1) return max_over_ranks(comms_.world, caught);
#endif
    return caught;
  }
  // The ranks of a save (every rank writes its part; the agreements go over the whole world). One process: no
  // agreements.
  SaveRanks save_ranks() const {
    SaveRanks ranks;
    ranks.rank = rank();
#ifdef MOETUNE_HAVE_CUDA
    if (world() > 1) ranks.max_over_ranks = [this](int value) { return max_over_ranks(comms_.world, value); };
#endif
    return ranks;
  }
#ifdef MOETUNE_HAVE_CUDA
  const parallel::EpDpComms& comms() const { return comms_; }
#endif

 private:
  parallel::ProcessGroupInfo group_;
  parallel::ParallelLayout layout_;
  ModelConfig full_, local_;
#ifdef MOETUNE_HAVE_CUDA
  parallel::EpDpComms comms_;  // world > 1 only
#endif
};

// Values for a save, and the host copies they point into where they are not the engine's own arenas (a GPU's).
struct SaveValues {
  std::vector<float> params, exp_avg, exp_avg_sq;  // (this rank's layout) copies off the GPU
  std::vector<HeldRun> held;
};

// The engine a run trains on: the CPU reference Trainer or the GPU trainer, behind the calls the loop needs.
class Runner {
 public:
  virtual ~Runner() = default;
  virtual StepStats step(const std::vector<Batch>& micro_batches) = 0;
  virtual LossParts evaluate(const Batch& batch) = 0;
  // What this rank writes of a save (write_folder's `held`): the trained fp32 weights and, with_state, the AdamW
  // moments, as runs of the full layout. Several GPUs: every rank calls it (with ZeRO-1 the trainer gathers the
  // shards), the ranks of the first DP replica hold their experts and a share of the replicated values, the others
  // nothing.
  virtual SaveValues values_to_save(bool with_state) = 0;
  // The optimizer state when resuming, in this rank's layout (place.local_config(): its experts; read so from the
  // checkpoint, train/train_state.h read_checkpoint_values).
  virtual void load_state(TrainState state) = 0;
};

// The runner of this run: the CPU reference trainer over `host` (--device cpu: the whole model), or the GPU trainer
// (options from the command line: recipe, fused step, grouped GEMMs, recompute, packing bound, ZeRO stage, the ranks'
// communicators) starting from `start_params`: fp32 weights in this rank's layout (place.local_config()) — a resumed
// checkpoint's, the built-in model's slice — uploaded by the constructor, or nullptr (--model: the GPU trainer streams
// its experts of --model itself).
std::unique_ptr<Runner> make_runner(const Args& args, const RunPlace& place, Model* host, const float* start_params,
                                    const TrainOptions& options, int batch_size, int seq_len);

}  // namespace moetune::cli
