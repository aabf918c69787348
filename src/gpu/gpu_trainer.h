// Why: training on one GPU: the parameter, gradient and optimizer-state arenas (one device allocation each, with the
// CPU layout's offsets), the optimizer step and the two precision recipes:
//   (a) bf16 parameters, gradients and AdamW states — what Transformers' bf16 baseline does;
//   (b) bf16 parameters and gradients with fp32 master weights and fp32 AdamW states (standard mixed precision).
// With the fused optimizer step (no clipping, no accumulation), AdamW runs on each gradient group (a layer, the head,
// the embedding) as soon as the backward pass has finished it, on a second stream that overlaps the backward of the
// next group, and the group's gradient memory is reused: a few group-sized buffers (slots, below) replace the whole
// gradient arena.
// The experts' weight gradients (most of each layer) are written over those buffers rather than added to them, so
// only the rest is cleared between groups (core/range_set.h keeps track of what is left). With recipe (a), experts not
// replicated over ranks, no ZeRO-1 and moetune's expert GEMMs, the routed experts go further (GpuOptions::expert_step):
// their weight-gradient GEMMs take the AdamW step themselves (GradientSink::expert_step), so their gradients never
// exist and the group buffers hold only the other parameters, packed.
//
// Training state (checkpoints, train/train_state.h): export_state/import_state move the step count and the AdamW
// moments in the device-neutral format (fp32, layout order; recipe (a)'s bf16 moments widened, exactly). The weights a
// checkpoint stores beside them are download_params(): recipe (a)'s bf16 parameters widened (exact), recipe (b)'s fp32
// master weights as they are. A run resumes by constructing the trainer from those fp32 weights (host_params: the
// masters become them exactly and the bf16 parameters their round-to-nearest-even rounding, which is what every
// optimizer step leaves in them) and importing the state, so the next steps are the uninterrupted run's bit for bit
// (the kernels are deterministic). Moments live in the same arenas with or without the fused optimizer step.
//
// ZeRO-1 (GpuOptions::zero_stage 1, several ranks): the moments and recipe (b)'s masters are sharded over the ranks
// sharing the parameters (gpu/zero_optimizer.h, cut per gradient group: parallel/zero_layout.h); a step reduce-scatters
// the gradients instead of all-reducing them, steps this rank's shard and all-gathers the updated bf16 parameters.
// With the fused step each group is reduce-scattered on the engine's stream and stepped on the optimizer stream as
// before; its all-gather is enqueued on the engine's stream when the next group ends (or when the step ends), once the
// optimizer stream has stepped it, so the optimizer still overlaps the backward and every collective stays on one
// stream, in the same order on every rank. Clipping sums each rank's share of the squared norm over the world;
// accumulation sums the micro-batches' gradients in the whole arena first, as without ZeRO. The parameters stay whole
// on every rank, so evaluation and the next forward are unchanged. export_state, download_params (recipe (b)) and
// nothing else become collective: every rank calls them, in the same order (they gather the shards), and the state
// they return is the full, device-neutral one, as without ZeRO.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/range_set.h"
#include "gpu/expert_exchange.h"
#include "gpu/gpu_engine.h"
#include "io/streaming_loader.h"
#include "ops/cuda/adamw.h"
#include "ops/cuda/device_buffer.h"
#include "train/data.h"
#include "train/trainer.h"

namespace moetune::parallel {
class NcclComm;
}

namespace moetune::cuda {

class ZeroOptimizer;  // gpu/zero_optimizer.h

enum class Recipe { Bf16, MixedMaster };
enum class ExpertStepPlace { Auto, InGemm, Optimizer };
ExpertStepPlace parse_expert_step_place(const std::string& name);  // "auto" | "in-gemm" | "optimizer"
Recipe parse_recipe(const std::string& name);  // "bf16" | "mixed"
const char* recipe_name(Recipe recipe);

struct GpuOptions {
  Recipe recipe = Recipe::Bf16;
  bool fused_optimizer = false;  // needs max_grad_norm == 0 and untied embeddings
  uint64_t seed = 0;             // random initialisation when no parameters are given
  GroupedGemmBackend grouped_gemm = GroupedGemmBackend::Sm90;
  bool evaluate_only = false;    // no gradient or optimizer arenas: evaluate() only (moetune eval)
  bool recompute = false;        // per-layer activation recompute in the backward pass (a GpuEngine option)
  int max_documents = 0;         // packed batches: the most documents per batch (0 = packing off; GpuEngineOptions)
  // Many GPUs (parallel/nccl_comm.h; all null: one GPU). world: every rank; the replicated (dense) gradients are
  // summed over it. expert_group: the EP group (token exchange; the config must hold this rank's block of experts,
  // parallel/expert_shard.h). expert_replicas: the ranks holding the same experts (the DP group); expert gradients
  // are summed over it. Each rank scales its loss by 1 / (its label count x world size), so the sums are the mean of
  // the ranks' mean losses (what data-parallel Transformers/PyTorch training computes).
  const parallel::NcclComm* world = nullptr;
  const parallel::NcclComm* expert_group = nullptr;
  const parallel::NcclComm* expert_replicas = nullptr;
  double expert_capacity = 0.0;  // GpuEngineOptions::expert_capacity
  ExchangeBackend expert_exchange = ExchangeBackend::Nccl;  // GpuEngineOptions::expert_exchange
  bool overlap_exchange = true;  // GpuEngineOptions::overlap_exchange
  // 0: every rank keeps the whole optimizer state; 1: ZeRO-1, sharded over the ranks sharing the parameters (see the
  // top of this file). No effect with one rank (nothing to shard over).
  int zero_stage = 0;
  // With the fused step, where the routed experts are stepped: inside their weight-gradient GEMMs (see the top of this
  // file; only where that is possible), on the optimizer stream like every other parameter, or (Auto) in the GEMMs
  // without expert parallelism and on the optimizer stream with it — measured on 2 H200s, 16 Qwen3-30B-A3B layers:
  // EP=2 ran 0.89x of one GPU with the step in the GEMMs and 0.91x without, as the portable kernel's weight gradient is
  // slower than the Hopper one once each expert gets twice the rows. Same bits either way with the same GEMM kernels.
  ExpertStepPlace expert_step = ExpertStepPlace::Auto;
};

class GpuTrainer : private GradientSink {
 public:
  // host_params: fp32 parameters in `layout` order, or nullptr for a random initialisation on the device (norms 1,
  // biases 0, matrices N(0, initializer_range)).
  GpuTrainer(const ModelConfig& config, const float* host_params, const TrainOptions& options, const GpuOptions& gpu,
             int batch_size, int seq_len);
  ~GpuTrainer() override;

  // Replaces the parameters with a Hugging Face checkpoint streamed straight to the device (gpu/gpu_loader.h); only
  // before the first step. With recipe (b) the fp32 master weights become the loaded bf16 values.
  LoadReport load_checkpoint(const std::string& folder, const LoadOptions& options = {});

  // The optimizer state after the last step (see the top of this file). Host memory: two fp32 values per parameter.
  // ZeRO-1: collective (every rank calls it); keep = false takes part without building the host copy (empty state).
  TrainState export_state(bool keep = true) const;
  // Replaces the optimizer state (resuming): step count and moments (layout.total_floats() values each, else Error);
  // recipe (a) rounds the moments to bf16 (exact for moments it exported).
  void import_state(const TrainState& state);
  long steps_done() const { return steps_done_; }

  StepStats step(const Batch& batch);
  // One optimizer step over several micro-batches (gradient accumulation; not with the fused optimizer step).
  StepStats step(const std::vector<Batch>& micro_batches);
  // Forward + backward into zeroed gradients, all-reduced in full (with or without ZeRO-1), no update (tests; not with
  // the fused optimizer).
  GpuLoss compute_gradients(const Batch& batch);
  GpuLoss evaluate(const Batch& batch);

  // fp32, layout order: recipe (b)'s masters, recipe (a) widened. ZeRO-1: collective, keep as export_state.
  std::vector<float> download_params(bool keep = true) const;
  // fp32, layout order (not with the fused optimizer). With ZeRO-1, after step() only this rank's shards (and the
  // segments' tails) hold reduced gradients; after compute_gradients all of it does.
  std::vector<float> download_grads() const;
  GpuEngine& engine() { return *engine_; }
  const ParamLayout& layout() const { return layout_; }
  size_t parameter_bytes() const;
  size_t gradient_bytes() const;
  size_t optimizer_bytes() const;
  bool shards_optimizer() const { return zero_ != nullptr; }  // ZeRO-1 in effect (several ranks)
  bool steps_experts_in_gemm() const { return experts_in_gemm_; }  // the experts are stepped in their GEMMs

 private:
  // Layout elements [begin, end) whose gradients sit at buffer_offset of the group's gradient buffer, contiguous, and
  // the AdamW plan of the parameters among them (offsets relative to begin).
  struct StepRun {
    size_t begin = 0, end = 0, buffer_offset = 0;
    AdamWPlan plan;
  };
  struct Group {
    size_t start = 0, end = 0;  // element range of the group's parameters in the layout
    std::vector<StepRun> runs;  // what the optimizer steps: all of the group, or all but the routed experts
    size_t buffer_elements = 0;
    std::vector<size_t> view_offsets;  // per layout parameter: its gradient's offset in the buffer, or kUnbound
    // In the buffer: the gradients the backward adds to (cleared before the group runs) and the routed experts'
    // weight gradients it writes over (GradientSink::overwrites_expert_gradients).
    std::vector<Range> added, written;
  };
  struct GradientRun {
    size_t start = 0, end = 0;  // element range in the layout
    bool expert = false;        // routed-expert weights (reduced over the expert replicas, not the world)
  };
  std::vector<GradientRun> gradient_runs_;  // the layout as maximal runs of one kind, ascending
  // The fused step's gradient buffers ("slots"): the head and the embedding share one and the layers alternate over two
  // more when that takes less memory (the layers' packed buffers are small beside the head's once the experts are
  // stepped in their GEMMs), else every group alternates over two slots of the largest group's size.
  static constexpr int kSlots = 3;
  // Fused step: per slot, the ranges that may hold values (earlier groups' expert weight gradients, which end_group
  // does not clear); begin_group clears the part the new group adds to.
  RangeSet uncleared_[kSlots];
  const GpuWeights& begin_group(int group) override;
  void end_group(int group) override;
  // The fused step's group buffers: the engine writes the expert weight gradients over them, so end_group clears only
  // the rest (what the backward adds to) after the step.
  bool overwrites_expert_gradients() const override { return gpu_.fused_optimizer; }
  const ExpertStep* expert_step(int layer) override;
  // Sets experts_in_gemm_, builds groups_ and places them in slots (the engine must exist); returns the elements of
  // all slots.
  size_t plan_groups();
  void bind_expert_steps();  // expert_steps_ from the moment arenas
  void optimizer_update(const Group& group, const bf16* grads, cudaStream_t stream, float grad_scale);
  // Many GPUs: sums the gradients of [start, end) of the layout, held at `grads` (element `start` first), over the
  // ranks sharing them (replicated parameters over the world, experts over their replicas). On `stream_`.
  void reduce_gradients(bf16* grads, size_t start, size_t end);
  // Many GPUs: the loss parts summed over the world (ce_sum, counted) and averaged (aux).
  GpuLoss reduce_loss(const GpuLoss& local);
  // values (count <= 3, host) summed over comm's ranks, in place, through sums_; synchronises stream_.
  void sum_over(const parallel::NcclComm& comm, double* values, int count);
  // ZeRO-1, fused step: all-gathers the parameters of the group stepped last (pending_gather_), on stream_ once the
  // optimizer stream has stepped it.
  void gather_pending();
  int world_size() const;
  void set_step_hyper(StepStats& stats);
  void require_training(const char* what) const;
  void check_batch(const Batch& batch) const;
  void set_batch(const Batch& batch);  // uploads ids, labels and (packed batches) positions and documents
  // The squared norm of the whole gradient arena, over every rank's experts (many GPUs), on the host.
  double global_grad_norm_squared();
  void synchronize() const;  // both streams

  ModelConfig config_;
  ParamLayout layout_;
  TrainOptions options_;
  GpuOptions gpu_;
  cudaStream_t stream_ = nullptr, optimizer_stream_ = nullptr;
  std::unique_ptr<GpuEngine> engine_;
  DeviceBuffer<bf16> params_, grads_;          // grads_: the whole arena, or the fused step's slots
  DeviceBuffer<float> master_;                 // recipe (b) only (without ZeRO-1)
  DeviceBuffer<bf16> m16_, v16_;               // recipe (a) (without ZeRO-1)
  DeviceBuffer<float> m32_, v32_;              // recipe (b) (without ZeRO-1)
  std::vector<Group> groups_;                  // index: group id (layers, head, embedding); whole model last
  DeviceBuffer<float> norm_result_, norm_scratch_;
  GpuWeights weights_, grad_view_;
  size_t slot_offset_[kSlots] = {};            // element offsets of the slots in grads_
  std::vector<int> group_slot_;                // per group (not the whole model): its slot
  bool experts_in_gemm_ = false;               // GpuOptions::expert_step resolved
  std::vector<ExpertStep> expert_steps_;       // per layer (experts_in_gemm_): the moments; hyper set when asked
  ExpertStep current_expert_step_{};
  int current_slot_ = 0;
  cudaEvent_t ready_[kSlots] = {}, free_[kSlots] = {}, optimizer_done_ = nullptr;
  std::unique_ptr<ZeroOptimizer> zero_;        // ZeRO-1: the sharded state (the arenas above then stay empty)
  cudaEvent_t stepped_ = nullptr;              // ZeRO-1, fused step: the optimizer stream has stepped pending_gather_
  int pending_gather_ = -1;
  DeviceBuffer<double> sums_;                  // (3) host values summed over the ranks (loss parts, norm parts)
  AdamWHyper hyper_{};
  long steps_done_ = 0;
  int batch_size_, seq_len_;
};

// Fills a bf16 buffer with N(0, std) from a counter-based generator (same numbers for the same seed and offset).
void init_normal(bf16* data, size_t count, float std, uint64_t seed, cudaStream_t stream);
void fill_bf16(bf16* data, size_t count, float value, cudaStream_t stream);

}  // namespace moetune::cuda
