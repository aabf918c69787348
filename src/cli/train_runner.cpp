// Why: see train_runner.h: the CPU and GPU runners of `moetune train`.
#include "cli/train_runner.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <utility>

#include "cli/rank_slices.h"

#ifdef MOETUNE_HAVE_CUDA
#include "gpu/gpu_trainer.h"
#endif

namespace moetune::cli {

namespace {

class CpuRunner : public Runner {
 public:
  CpuRunner(Model& model, const TrainOptions& options, int batch_size, int seq_len)
      : model_(model), trainer_(model, options, batch_size, seq_len) {}
  StepStats step(const std::vector<Batch>& micro_batches) override { return trainer_.step(micro_batches); }
  LossParts evaluate(const Batch& batch) override { return trainer_.evaluate(batch); }
  void copy_parameters_to(Model* model) override {  // trains the model's own buffer
    if (model != &model_) std::copy(model_.params(), model_.params() + model_.buffer_size(), model->params());
  }
  TrainState state() override { return trainer_.state(); }
  void load_state(TrainState state) override { trainer_.load_state(std::move(state)); }

 private:
  Model& model_;
  Trainer trainer_;
};

#ifdef MOETUNE_HAVE_CUDA
class GpuRunner : public Runner {
 public:
  // host_params: fp32 parameters of the full layout to start from (exact master weights), or nullptr to stream
  // `model_folder` to the GPU (this rank's experts only).
  GpuRunner(const RunPlace& place, const float* host_params, const std::string& model_folder,
            const TrainOptions& options, const cuda::GpuOptions& gpu, int batch_size, int seq_len)
      : place_(place),
        sharded_(place.layout().ep > 1),
        trainer_(place.local_config(),
                 sharded_ && host_params ? shard_of(host_params).data() : host_params, options, gpu, batch_size,
                 seq_len) {
    std::vector<float>().swap(shard_params_);  // uploaded
    if (sharded_)
      for (int q = 0; q < place.layout().ep; ++q) {
        const parallel::ExpertRange range = place.layout().owned_experts(q);
        runs_by_rank_.push_back(shard_runs(place.full_config(),
                                           parallel::expert_shard_config(place.full_config(), range.begin, range.count())));
      }
    if (!host_params) {
      LoadOptions load;
      load.progress = place.rank0() && ::isatty(STDERR_FILENO) != 0;
      const LoadReport report = trainer_.load_checkpoint(model_folder, load);
      if (place.rank0())
        std::fprintf(stderr, "loaded %s to the GPU%s: %.2f GB in %.1f s (%.2f GB/s)\n", model_folder.c_str(),
                     sharded_ ? " (rank 0's experts)" : "", static_cast<double>(report.bytes_read) / 1e9,
                     report.seconds, report.gb_per_s());
    }
  }
  StepStats step(const std::vector<Batch>& micro_batches) override {
    StepStats stats = trainer_.step(micro_batches);
    stats.tokens *= place_.world();  // every rank trained as many
    return stats;
  }
  LossParts evaluate(const Batch& batch) override {
    const cuda::GpuLoss loss = trainer_.evaluate(batch);  // summed over the ranks
    return {loss.ce_sum, loss.counted, loss.aux};
  }
  // Several GPUs: the ranks of the first EP group hold every expert once; they take part, the others have nothing to
  // add (their replicas are the same). With ZeRO-1 every rank takes part in the trainer's gathers of the shards first.
  void copy_parameters_to(Model* model) override {
    if (!gathers() && !trainer_.shards_optimizer()) return;
    const std::vector<float> params = trainer_.download_params(gathers());
    if (!gathers()) return;
    if (sharded_) gather_expert_shards(place_.comms().ep, runs_by_rank_, params, model ? model->params() : nullptr);
    else if (model) std::copy(params.begin(), params.end(), model->params());
  }
  TrainState state() override {
    if (!gathers() && !trainer_.shards_optimizer()) return {};
    TrainState local = trainer_.export_state(gathers());
    if (!gathers()) return {};
    if (!sharded_) return place_.rank0() ? local : TrainState{};
    TrainState full;
    full.step = local.step;
    const size_t total = ParamLayout(place_.full_config()).total_floats();
    if (place_.rank0()) {
      full.exp_avg.assign(total, 0.0f);
      full.exp_avg_sq.assign(total, 0.0f);
    }
    gather_expert_shards(place_.comms().ep, runs_by_rank_, local.exp_avg, place_.rank0() ? full.exp_avg.data() : nullptr);
    gather_expert_shards(place_.comms().ep, runs_by_rank_, local.exp_avg_sq,
                         place_.rank0() ? full.exp_avg_sq.data() : nullptr);
    return full;
  }
  void load_state(TrainState state) override {
    if (!sharded_) return trainer_.import_state(state);
    TrainState local;
    local.step = state.step;
    const size_t size = trainer_.layout().total_floats();
    local.exp_avg = slice_to_shard(runs_by_rank_[place_.layout().ep_rank(place_.rank())], state.exp_avg.data(), size);
    local.exp_avg_sq =
        slice_to_shard(runs_by_rank_[place_.layout().ep_rank(place_.rank())], state.exp_avg_sq.data(), size);
    state = TrainState{};  // the full moments are no longer needed
    trainer_.import_state(local);
  }

 private:
  bool gathers() const { return place_.layout().dp_rank(place_.rank()) == 0; }
  // This rank's experts of a full-layout arena (kept alive until the trainer has uploaded it).
  const std::vector<float>& shard_of(const float* full) {
    const ModelConfig& local = place_.local_config();
    shard_params_ = slice_to_shard(shard_runs(place_.full_config(), local), full, ParamLayout(local).total_floats());
    return shard_params_;
  }

  const RunPlace& place_;
  bool sharded_;
  std::vector<float> shard_params_;                // (local layout) the starting weights, until uploaded
  cuda::GpuTrainer trainer_;
  std::vector<std::vector<ShardRun>> runs_by_rank_;  // EP rank -> its shard's runs (sharded_ only)
};
#endif

}  // namespace

std::unique_ptr<Runner> make_runner(const Args& args, const RunPlace& place, Model* host, const TrainOptions& options,
                                    int batch_size, int seq_len) {
  const std::string device = args.text("device");
  if (device == "cpu") return std::make_unique<CpuRunner>(*host, options, batch_size, seq_len);
#ifdef MOETUNE_HAVE_CUDA
  cuda::GpuOptions gpu;
  gpu.recipe = cuda::parse_recipe(args.text("recipe"));
  gpu.fused_optimizer = args.text("fused-optimizer") == "on";
  gpu.grouped_gemm = cuda::parse_grouped_gemm_backend(args.text("grouped-gemm"));
  gpu.seed = static_cast<uint64_t>(args.integer("seed"));
  gpu.recompute = args.text("recompute") == "on";
  gpu.zero_stage = static_cast<int>(args.integer("zero"));
  // A packed batch holds at most one document per token (the attention plans are built for that bound).
  if (args.text("packing") == "on") gpu.max_documents = batch_size * seq_len;
  if (place.world() > 1) {
    gpu.world = &place.comms().world;
    gpu.expert_group = place.layout().ep > 1 ? &place.comms().ep : nullptr;
    gpu.expert_replicas = &place.comms().dp;
    gpu.expert_capacity = args.number("expert-capacity");
    gpu.expert_exchange = args.text("ep-exchange") == "nvlink" ? cuda::ExchangeBackend::NvlinkDirect : cuda::ExchangeBackend::Nccl;
    gpu.overlap_exchange = args.text("ep-overlap") == "on";
  }
  return std::make_unique<GpuRunner>(place, host ? host->params() : nullptr, args.text("model"), options, gpu,
                                     batch_size, seq_len);
#else
  fail("this moetune was built without CUDA; --device cuda is not available");
#endif
}


}  // namespace moetune::cli
