// Why: see train_runner.h: the CPU and GPU runners of `moetune train`.
#include "cli/train_runner.h"

#include <unistd.h>

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
  SaveValues values_to_save(bool with_state) override {  // the model's own buffer and the trainer's moments
    const size_t floats = model_.buffer_size();
    SaveValues values;
    values.held.push_back({SourceArena::Params, 0, floats, model_.params()});
    if (with_state) {
      values.held.push_back({SourceArena::ExpAvg, 0, floats, trainer_.state().exp_avg.data()});
      values.held.push_back({SourceArena::ExpAvgSq, 0, floats, trainer_.state().exp_avg_sq.data()});
    }
    return values;
  }
  void load_state(TrainState state) override { trainer_.load_state(std::move(state)); }

 private:
  Model& model_;
  Trainer trainer_;
};

#ifdef MOETUNE_HAVE_CUDA
class GpuRunner : public Runner {
 public:
  // start_params: fp32 parameters of this rank's layout to start from (exact master weights), or nullptr to stream
  // `model_folder` to the GPU (this rank's experts only).
  GpuRunner(const RunPlace& place, const float* start_params, const std::string& model_folder,
            const TrainOptions& options, const cuda::GpuOptions& gpu, int batch_size, int seq_len)
      : place_(place),
        written_(written_runs(shard_runs(place.full_config(), place.local_config()),
                              place.layout().ep_rank(place.rank()), place.layout().ep)),
        trainer_(place.local_config(), start_params, options, gpu, batch_size, seq_len) {
    if (!start_params) {
      LoadOptions load;
      load.progress = place.rank0() && ::isatty(STDERR_FILENO) != 0;
      const LoadReport report = trainer_.load_checkpoint(model_folder, load);
      if (place.rank0())
        std::fprintf(stderr, "loaded %s to the GPU%s: %.2f GB in %.1f s (%.2f GB/s)\n", model_folder.c_str(),
                     place.layout().ep > 1 ? " (rank 0's experts)" : "", static_cast<double>(report.bytes_read) / 1e9,
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
  // The ranks of the first DP replica hold every expert once between them and write; the other replicas hold the same
  // values and write nothing. With ZeRO-1 every rank takes part in the trainer's gathers of the shards first.
  SaveValues values_to_save(bool with_state) override {
    SaveValues values;
    if (!writes() && !trainer_.shards_optimizer()) return values;
    values.params = trainer_.download_params(writes());
    TrainState state;
    if (with_state) state = trainer_.export_state(writes());
    if (!writes()) return SaveValues{};
    values.exp_avg = std::move(state.exp_avg);
    values.exp_avg_sq = std::move(state.exp_avg_sq);
    values.held = held_runs(written_, values.params.data(), with_state ? values.exp_avg.data() : nullptr,
                            with_state ? values.exp_avg_sq.data() : nullptr);
    return values;
  }
  void load_state(TrainState state) override { trainer_.import_state(state); }

 private:
  bool writes() const { return place_.layout().dp_rank(place_.rank()) == 0; }

  const RunPlace& place_;
  std::vector<ShardRun> written_;  // what this rank writes of a save (written_runs of its layout's runs)
  cuda::GpuTrainer trainer_;
};
#endif

}  // namespace

std::unique_ptr<Runner> make_runner(const Args& args, const RunPlace& place, Model* host, const float* start_params,
                                    const TrainOptions& options, int batch_size, int seq_len) {
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
  return std::make_unique<GpuRunner>(place, start_params, args.text("model"), options, gpu, batch_size, seq_len);
#else
  fail("this moetune was built without CUDA; --device cuda is not available");
#endif
}


}  // namespace moetune::cli
