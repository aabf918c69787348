// Why: see gpu_trainer.h.
#include "gpu/gpu_trainer.h"

#include <algorithm>
#include <cmath>

#include "core/dtype.h"
#include "gpu/elementwise.h"
#include "gpu/gpu_loader.h"
#include "gpu/zero_optimizer.h"
#include "parallel/expert_shard.h"
#include "parallel/nccl_comm.h"

namespace moetune::cuda {

Recipe parse_recipe(const std::string& name) {
  if (name == "bf16") return Recipe::Bf16;
  if (name == "mixed") return Recipe::MixedMaster;
  fail("unknown precision recipe \"", name, "\" (expected bf16 or mixed)");
}

const char* recipe_name(Recipe recipe) { return recipe == Recipe::Bf16 ? "bf16" : "mixed"; }

ExpertStepPlace parse_expert_step_place(const std::string& name) {
  if (name == "auto") return ExpertStepPlace::Auto;
  if (name == "in-gemm") return ExpertStepPlace::InGemm;
  if (name == "optimizer") return ExpertStepPlace::Optimizer;
  fail("unknown expert step place \"", name, "\" (expected auto, in-gemm or optimizer)");
}

namespace {

// Gradient group of a parameter, from its name.
int group_of(const std::string& name, const ModelConfig& config) {
  const std::string prefix = "model.layers.";
  if (name.rfind(prefix, 0) == 0) return std::stoi(name.substr(prefix.size()));
  if (name.rfind("model.embed_tokens.", 0) == 0) return embedding_group(config);
  return head_group(config);
}

// Routed-expert weights. They must be exactly the tensors whose gradients the engine writes rather than adds to
// (GradientSink::overwrites_expert_gradients): a config with other expert tensors is refused.
bool is_expert(const ParamInfo& info) {
  if (info.name.find("mlp.experts.") == std::string::npos) return false;
  if (!info.name.ends_with("mlp.experts.gate_up_proj") && !info.name.ends_with("mlp.experts.down_proj"))
    fail("GPU trainer: expert tensor ", info.name, " is not supported (only gate_up_proj and down_proj)");
  return true;
}

// The layout as ZeRO-1 cuts it (parallel/zero_layout.h): gradient groups and routed-expert flags.
std::vector<parallel::ZeroParam> zero_params(const ParamLayout& layout, const ModelConfig& config) {
  std::vector<parallel::ZeroParam> params;
  for (const ParamInfo& info : layout.params())
    params.push_back({info.offset, info.numel, info.weight_decay, group_of(info.name, config), is_expert(info)});
  return params;
}

}  // namespace

GpuTrainer::GpuTrainer(const ModelConfig& config, const float* host_params, const TrainOptions& options,
                       const GpuOptions& gpu, int batch_size, int seq_len)
    : config_(config), layout_(config_), options_(options), gpu_(gpu), batch_size_(batch_size), seq_len_(seq_len) {
  if (gpu_.fused_optimizer && options_.max_grad_norm > 0)
    fail("the fused optimizer step applies AdamW during the backward pass, so it cannot clip by the global gradient "
         "norm: set the max grad norm to 0 or turn the fused step off");
  if (gpu_.fused_optimizer && config_.tie_word_embeddings)
    fail("the fused optimizer step does not support tied embeddings yet");
  if (gpu_.zero_stage != 0 && gpu_.zero_stage != 1)
    fail("ZeRO stage ", gpu_.zero_stage, " is not available (0: off, 1: optimizer state sharded over the ranks)");
  // The fused optimizer step's AdamW (memory-bound, many short blocks) runs beside the backward pass; the compute
  // stream gets the higher priority so that its kernels (the persistent expert GEMMs first) take SMs as soon as they
  // free up, and AdamW fills what is left instead of holding SMs the GEMMs wait for.
  int lowest_priority = 0, highest_priority = 0;
  CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&lowest_priority, &highest_priority));
  CUDA_CHECK(cudaStreamCreateWithPriority(&stream_, cudaStreamNonBlocking, highest_priority));
  CUDA_CHECK(cudaStreamCreateWithPriority(&optimizer_stream_, cudaStreamNonBlocking, lowest_priority));
  for (int k = 0; k < kSlots; ++k) {
    CUDA_CHECK(cudaEventCreateWithFlags(&ready_[k], cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreateWithFlags(&free_[k], cudaEventDisableTiming));
  }
  CUDA_CHECK(cudaEventCreateWithFlags(&optimizer_done_, cudaEventDisableTiming));
  CUDA_CHECK(cudaEventCreateWithFlags(&stepped_, cudaEventDisableTiming));

  GpuEngineOptions engine_options;
  engine_options.grouped_gemm = gpu_.grouped_gemm;
  engine_options.recompute = gpu_.recompute;
  engine_options.max_documents = gpu_.max_documents;
  engine_options.expert_comm = gpu_.expert_group;
  engine_options.expert_ranks = gpu_.expert_group ? gpu_.expert_group->size() : 1;
  engine_options.expert_capacity = gpu_.expert_capacity;
  engine_options.expert_exchange = gpu_.expert_exchange;
  engine_options.overlap_exchange = gpu_.overlap_exchange;
  engine_ = std::make_unique<GpuEngine>(config_, batch_size, seq_len, stream_, engine_options);
  for (const ParamInfo& info : layout_.params()) {
    const bool expert = is_expert(info);
    if (!gradient_runs_.empty() && gradient_runs_.back().expert == expert) gradient_runs_.back().end = info.offset + info.numel;
    else gradient_runs_.push_back({info.offset, info.offset + info.numel, expert});
  }
  const size_t slot_elements = plan_groups();
  const size_t total = layout_.total_floats();
  params_ = DeviceBuffer<bf16>(total);
  if (gpu_.evaluate_only) {
    // Evaluation only: the bf16 parameters are all there is (no gradients, moments or master weights).
  } else if (gpu_.zero_stage == 1 && world_size() > 1) {
    zero_ = std::make_unique<ZeroOptimizer>(zero_params(layout_, config_), gpu_.recipe == Recipe::MixedMaster,
                                            *gpu_.world, gpu_.expert_replicas);
  } else if (gpu_.recipe == Recipe::Bf16) {
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
  if (!gpu_.evaluate_only) {
    grads_ = DeviceBuffer<bf16>(gpu_.fused_optimizer ? slot_elements : total);
    grads_.zero();
  }
  if (experts_in_gemm_) bind_expert_steps();
  if (host_params) {
    std::vector<bf16> converted(total);
    for (size_t i = 0; i < total; ++i) converted[i] = __float2bfloat16(host_params[i]);
    params_.upload(converted);
  } else {
    CUDA_CHECK(cudaMemset(params_.data(), 0, total * sizeof(bf16)));
    uint64_t stream_seed = gpu_.seed;
    for (const ParamInfo& info : layout_.params()) {
      bf16* data = params_.data() + info.offset;
      const bool is_norm = info.shape.size() == 1 && info.name.find("norm") != std::string::npos;
      if (is_norm) fill_bf16(data, info.numel, 1.0f, stream_);
      else if (info.shape.size() == 1) fill_bf16(data, info.numel, 0.0f, stream_);
      else init_normal(data, info.numel, config_.initializer_range, ++stream_seed, stream_);
    }
  }
  if (master_.size() > 0) {  // master weights: the exact fp32 values when given, else the bf16 init
    if (host_params) master_.upload(std::vector<float>(host_params, host_params + total));
    else convert_bf16_to_f32(master_.data(), params_.data(), total, stream_);
  }
  if (zero_ && host_params) zero_->set_masters(host_params);
  else if (zero_) zero_->set_masters(params_.data(), stream_);
  norm_result_ = DeviceBuffer<float>(1);
  norm_scratch_ = DeviceBuffer<float>(grad_norm_scratch_floats());
  if (world_size() > 1) sums_ = DeviceBuffer<double>(3);
  weights_ = as_bf16(layout_.bind16(reinterpret_cast<uint16_t*>(params_.data())));
  if (!gpu_.fused_optimizer && !gpu_.evaluate_only)
    grad_view_ = as_bf16(layout_.bind16(reinterpret_cast<uint16_t*>(grads_.data())));
  for (int k = 0; k < kSlots; ++k) CUDA_CHECK(cudaEventRecord(free_[k], optimizer_stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

size_t GpuTrainer::plan_groups() {
  const bool sharded = gpu_.zero_stage == 1 && world_size() > 1;
  const bool expert_parallel = gpu_.expert_group && gpu_.expert_group->size() > 1;
  const bool wanted = gpu_.expert_step == ExpertStepPlace::InGemm ||
                      (gpu_.expert_step == ExpertStepPlace::Auto && !expert_parallel);
  experts_in_gemm_ = gpu_.fused_optimizer && wanted && gpu_.recipe == Recipe::Bf16 && !sharded &&
                     !gpu_.evaluate_only && (!gpu_.expert_replicas || gpu_.expert_replicas->size() == 1) &&
                     engine_->can_step_experts_in_gemm() && config_.num_sparse_layers() > 0;
  // Gradient groups (layers, head, embedding) and the whole model.
  const std::vector<ParamInfo>& params = layout_.params();
  const int group_count = config_.num_layers + 2;
  std::vector<std::vector<size_t>> members(group_count + 1);  // parameter indices
  for (size_t i = 0; i < params.size(); ++i) {
    members[group_of(params[i].name, config_)].push_back(i);
    members[group_count].push_back(i);
  }
  constexpr size_t kAlign = ParamLayout::kParamAlignment;
  const auto align = [](size_t n) { return (n + kAlign - 1) / kAlign * kAlign; };
  groups_.resize(group_count + 1);
  for (int g = 0; g <= group_count; ++g) {
    Group& group = groups_[g];
    group.start = params[members[g].front()].offset;
    group.view_offsets.assign(params.size(), ParamLayout::kUnbound);
    // Runs of consecutive stepped parameters; a routed expert stepped in its GEMM ends a run. Each run's gradients
    // follow the previous run's in the buffer (16-byte aligned, as the AdamW kernels' vector accesses need).
    std::vector<std::vector<AdamWSpan>> spans;
    const ParamInfo* previous = nullptr;  // the run's last parameter so far
    for (const size_t i : members[g]) {
      const ParamInfo& info = params[i];
      group.end = std::max(group.end, info.offset + info.numel);
      if (experts_in_gemm_ && g < group_count && is_expert(info)) {
        previous = nullptr;
        continue;
      }
      if (!previous) {
        const size_t offset = group.runs.empty() ? 0 : align(group.runs.back().buffer_offset + group.runs.back().end -
                                                             group.runs.back().begin);
        group.runs.push_back({info.offset, info.offset, offset, {}});
        spans.emplace_back();
      }
      StepRun& run = group.runs.back();
      run.end = info.offset + info.numel;
      spans.back().push_back({info.offset - run.begin, info.numel, info.weight_decay});
      group.view_offsets[i] = run.buffer_offset + info.offset - run.begin;
      // Ranges of one kind (added or written) in the buffer, merged while the kind stays the same within a run.
      std::vector<Range>& ranges = is_expert(info) ? group.written : group.added;
      const size_t begin = group.view_offsets[i], end = begin + info.numel;
      if (previous && is_expert(*previous) == is_expert(info)) ranges.back().end = end;
      else ranges.push_back({begin, end});
      previous = &info;
    }
    for (size_t r = 0; r < group.runs.size(); ++r)
      group.runs[r].plan = AdamWPlan(spans[r], group.runs[r].end - group.runs[r].begin);
    if (!group.runs.empty())
      group.buffer_elements = group.runs.back().buffer_offset + group.runs.back().end - group.runs.back().begin;
  }
  size_t layer_max = 0, edge_max = 0;  // edge: the head and the embedding
  for (int g = 0; g < config_.num_layers; ++g) layer_max = std::max(layer_max, align(groups_[g].buffer_elements));
  for (const int g : {head_group(config_), embedding_group(config_)})
    edge_max = std::max(edge_max, align(groups_[g].buffer_elements));
  group_slot_.assign(group_count, 0);
  size_t slot_size[kSlots] = {};
  const size_t largest = std::max(layer_max, edge_max);
  if (edge_max + 2 * layer_max < 2 * largest) {
    slot_size[0] = edge_max, slot_size[1] = slot_size[2] = layer_max;
    for (int l = 0; l < config_.num_layers; ++l) group_slot_[l] = 1 + l % 2;
  } else {  // alternate in the backward's order: the head, the layers from the last, the embedding
    slot_size[0] = slot_size[1] = largest;
    for (int l = 0; l < config_.num_layers; ++l) group_slot_[l] = (config_.num_layers - l) % 2;
    group_slot_[embedding_group(config_)] = (config_.num_layers + 1) % 2;
  }
  for (int k = 1; k < kSlots; ++k) slot_offset_[k] = slot_offset_[k - 1] + slot_size[k - 1];
  return slot_offset_[kSlots - 1] + slot_size[kSlots - 1];
}

void GpuTrainer::bind_expert_steps() {
  const ModelWeights16 m = layout_.bind16(reinterpret_cast<uint16_t*>(m16_.data()));
  const ModelWeights16 v = layout_.bind16(reinterpret_cast<uint16_t*>(v16_.data()));
  expert_steps_.assign(config_.num_layers, ExpertStep{});
  for (int l = 0; l < config_.num_layers; ++l) {
    if (!config_.layer_is_sparse[l]) continue;
    const std::string prefix = str("model.layers.", l, ".mlp.experts.");
    const auto step = [&](uint16_t* m_part, uint16_t* v_part, const std::string& name) {
      return GroupedAdamW{reinterpret_cast<bf16*>(m_part), reinterpret_cast<bf16*>(v_part), {},
                          layout_.find(prefix + name)->weight_decay, 1.0f};
    };
    expert_steps_[l] = {step(m.layers[l].experts_gate_up, v.layers[l].experts_gate_up, "gate_up_proj"),
                        step(m.layers[l].experts_down, v.layers[l].experts_down, "down_proj")};
  }
}

const GradientSink::ExpertStep* GpuTrainer::expert_step(int layer) {
  if (!experts_in_gemm_) return nullptr;
  current_expert_step_ = expert_steps_[layer];
  current_expert_step_.gate_up.hyper = hyper_;
  current_expert_step_.down.hyper = hyper_;
  return &current_expert_step_;
}

GpuTrainer::~GpuTrainer() {
  engine_.reset();
  for (int k = 0; k < kSlots; ++k) {
    cudaEventDestroy(ready_[k]);
    cudaEventDestroy(free_[k]);
  }
  cudaEventDestroy(optimizer_done_);
  cudaEventDestroy(stepped_);
  if (optimizer_stream_) cudaStreamDestroy(optimizer_stream_);
  if (stream_) cudaStreamDestroy(stream_);
}

LoadReport GpuTrainer::load_checkpoint(const std::string& folder, const LoadOptions& options) {
  if (steps_done_ > 0) fail(folder, ": a checkpoint can only be loaded before the first training step");
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  LoadReport report;
  if (config_.experts_sharded()) {  // expert parallelism: the checkpoint holds every expert, this rank its block
    const ModelConfig full = parallel::unsharded_config(config_);
    const parallel::ShardOffsetMap map(full, config_);
    GpuBf16Sink device(params_.data());
    parallel::ShardedSink sink(map, device);
    LoadOptions sharded = options;
    sharded.owns_expert = parallel::held_experts_filter(config_, options.owns_expert);
    report = stream_hf_weights(folder, full, map.full_layout(), sink, sharded);
  } else {
    report = load_hf_weights_to_gpu(folder, config_, layout_, params_.data(), options);
  }
  if (master_.size() > 0) convert_bf16_to_f32(master_.data(), params_.data(), params_.size(), stream_);
  if (zero_) zero_->set_masters(params_.data(), stream_);
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  return report;
}

size_t GpuTrainer::parameter_bytes() const {
  return params_.size() * sizeof(bf16) + master_.size() * sizeof(float) + (zero_ ? zero_->master_bytes() : 0);
}
size_t GpuTrainer::gradient_bytes() const { return grads_.size() * sizeof(bf16); }
size_t GpuTrainer::optimizer_bytes() const {
  if (zero_) return zero_->optimizer_bytes();
  return (m16_.size() + v16_.size()) * sizeof(bf16) + (m32_.size() + v32_.size()) * sizeof(float);
}

const GpuWeights& GpuTrainer::begin_group(int group) {
  if (!gpu_.fused_optimizer) return grad_view_;
  current_slot_ = group_slot_[group];
  CUDA_CHECK(cudaStreamWaitEvent(stream_, free_[current_slot_], 0));
  // Bind this group's gradients to their places in the buffer (every other pointer of the view is null).
  bf16* buffer = grads_.data() + slot_offset_[current_slot_];
  const Group& g = groups_[group];
  RangeSet& uncleared = uncleared_[current_slot_];
  for (const Range& added : g.added) {  // what earlier groups' expert gradients left where this one adds
    for (const Range& stale : uncleared.intersection(added))
      CUDA_CHECK(cudaMemsetAsync(buffer + stale.begin, 0, (stale.end - stale.begin) * sizeof(bf16), stream_));
    uncleared.remove(added);
  }
  for (const Range& written : g.written) uncleared.add(written);
  grad_view_ = as_bf16(layout_.bind16(reinterpret_cast<uint16_t*>(buffer), g.view_offsets));
  return grad_view_;
}

void GpuTrainer::end_group(int group) {
  if (!gpu_.fused_optimizer) return;
  const int k = current_slot_;
  bf16* buffer = grads_.data() + slot_offset_[k];
  const Group& g = groups_[group];
  if (zero_) {
    engine_->mark_communication();
    gather_pending();
    zero_->reduce_scatter(buffer, g.start, g.end, stream_);
  } else {
    for (const StepRun& run : g.runs) reduce_gradients(buffer + run.buffer_offset, run.begin, run.end);
  }
  CUDA_CHECK(cudaEventRecord(ready_[k], stream_));
  CUDA_CHECK(cudaStreamWaitEvent(optimizer_stream_, ready_[k], 0));
  if (zero_) zero_->update(params_.data(), buffer, g.start, g.end, hyper_, 1.0f, optimizer_stream_);
  else optimizer_update(g, buffer, optimizer_stream_, 1.0f);
  if (zero_) {
    CUDA_CHECK(cudaEventRecord(stepped_, optimizer_stream_));
    pending_gather_ = group;
  }
  for (const Range& added : g.added)  // the expert weight gradients are written over, not cleared (begin_group)
    CUDA_CHECK(cudaMemsetAsync(buffer + added.begin, 0, (added.end - added.begin) * sizeof(bf16), optimizer_stream_));
  CUDA_CHECK(cudaEventRecord(free_[k], optimizer_stream_));
}

void GpuTrainer::gather_pending() {
  if (pending_gather_ < 0) return;
  const Group& g = groups_[pending_gather_];
  pending_gather_ = -1;
  CUDA_CHECK(cudaStreamWaitEvent(stream_, stepped_, 0));
  zero_->all_gather(params_.data(), g.start, g.end, stream_);
}

void GpuTrainer::optimizer_update(const Group& group, const bf16* grads, cudaStream_t stream, float grad_scale) {
  for (const StepRun& run : group.runs) {
    const size_t s = run.begin;
    const bf16* g = grads + run.buffer_offset;
    if (gpu_.recipe == Recipe::Bf16) {
      adamw_bf16(params_.data() + s, g, m16_.data() + s, v16_.data() + s, run.plan, hyper_, grad_scale, stream);
    } else {
      adamw_master(params_.data() + s, master_.data() + s, g, m32_.data() + s, v32_.data() + s, run.plan, hyper_,
                   grad_scale, stream);
    }
  }
}

void GpuTrainer::set_step_hyper(StepStats& stats) {
  stats.lr = options_.lr * lr_multiplier(options_.schedule, steps_done_, options_.warmup_steps, options_.total_steps);
  ++steps_done_;
  hyper_ = AdamWHyper{stats.lr, options_.beta1, options_.beta2, options_.eps, options_.weight_decay, steps_done_};
  stats.step = steps_done_;
}

void GpuTrainer::require_training(const char* what) const {
  if (gpu_.evaluate_only) fail(what, ": this GPU trainer was built for evaluation only (no gradients or optimizer state)");
}

void GpuTrainer::synchronize() const {
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  CUDA_CHECK(cudaStreamSynchronize(optimizer_stream_));
}

GpuLoss GpuTrainer::compute_gradients(const Batch& batch) {
  require_training("compute_gradients");
  if (gpu_.fused_optimizer) fail("compute_gradients needs the gradient arena; the fused optimizer step has none");
  set_batch(batch);
  CUDA_CHECK(cudaMemsetAsync(grads_.data(), 0, grads_.size() * sizeof(bf16), stream_));
  const int64_t counted = count_label_positions(batch);
  const float ranks = static_cast<float>(world_size());
  const float ce_scale = counted > 0 ? 1.0f / (static_cast<float>(counted) * ranks) : 0.0f;
  const float aux_scale = options_.aux_loss ? config_.router_aux_loss_coef / ranks : 0.0f;
  engine_->run(weights_, this, ce_scale, aux_scale);
  reduce_gradients(grads_.data(), 0, layout_.total_floats());
  return reduce_loss(engine_->loss());
}

void GpuTrainer::set_batch(const Batch& batch) {
  engine_->set_batch(batch.input_ids.data(), batch.labels.data(), batch.positions.empty() ? nullptr : batch.positions.data(),
                     batch.packed() ? batch.doc_start.data() : nullptr);
}

double GpuTrainer::global_grad_norm_squared() {
  if (zero_) {  // each rank's share, every element counted once over the world
    double share = zero_->grad_norm_squared_share(grads_.data(), stream_);
    sum_over(*gpu_.world, &share, 1);
    return share;
  }
  grad_norm_squared(grads_.data(), grads_.size(), norm_result_.data(), norm_scratch_.data(), stream_);
  float total = 0.0f;
  CUDA_CHECK(cudaMemcpyAsync(&total, norm_result_.data(), sizeof(float), cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (!gpu_.expert_group || gpu_.expert_group->size() == 1) return total;
  // Replicated gradients are equal on every rank after the reduction; expert gradients differ across the EP group:
  // |g|^2 = |replicated|^2 + sum over the EP group of |this rank's experts|^2.
  double experts = 0.0;
  for (const GradientRun& run : gradient_runs_) {
    if (!run.expert) continue;
    grad_norm_squared(grads_.data() + run.start, run.end - run.start, norm_result_.data(), norm_scratch_.data(), stream_);
    float part = 0.0f;
    CUDA_CHECK(cudaMemcpyAsync(&part, norm_result_.data(), sizeof(float), cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    experts += part;
  }
  double group_experts = experts;
  sum_over(*gpu_.expert_group, &group_experts, 1);
  return std::max(0.0, total - experts) + group_experts;
}

int GpuTrainer::world_size() const { return gpu_.world ? gpu_.world->size() : 1; }

void GpuTrainer::reduce_gradients(bf16* grads, size_t start, size_t end) {
  if (world_size() == 1) return;
  engine_->mark_communication();
  for (const GradientRun& run : gradient_runs_) {
    const size_t from = std::max(run.start, start), to = std::min(run.end, end);
    if (from >= to) continue;
    const parallel::NcclComm* comm = run.expert ? gpu_.expert_replicas : gpu_.world;
    if (comm && comm->size() > 1) comm->all_reduce(grads + (from - start), grads + (from - start), to - from, ncclSum, stream_);
  }
}

GpuLoss GpuTrainer::reduce_loss(const GpuLoss& local) {
  if (world_size() == 1) return local;
  double total[3] = {local.ce_sum, static_cast<double>(local.counted), local.aux};
  sum_over(*gpu_.world, total, 3);
  return {total[0], static_cast<int64_t>(total[1]), total[2] / world_size()};
}

void GpuTrainer::sum_over(const parallel::NcclComm& comm, double* values, int count) {
  MT_ASSERT(count >= 1 && static_cast<size_t>(count) <= sums_.size());
  const size_t bytes = static_cast<size_t>(count) * sizeof(double);
  CUDA_CHECK(cudaMemcpyAsync(sums_.data(), values, bytes, cudaMemcpyHostToDevice, stream_));
  comm.all_reduce(sums_.data(), sums_.data(), static_cast<size_t>(count), ncclSum, stream_);
  CUDA_CHECK(cudaMemcpyAsync(values, sums_.data(), bytes, cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void GpuTrainer::check_batch(const Batch& batch) const {
  if (batch.batch_size != batch_size_ || batch.seq_len != seq_len_)
    fail("batch of shape ", batch.batch_size, "x", batch.seq_len, " does not match the GPU trainer's ", batch_size_, "x", seq_len_);
  if (batch.packed() && gpu_.max_documents == 0)
    fail("a packed batch reached a GPU trainer built without packing (GpuOptions::max_documents 0)");
}

GpuLoss GpuTrainer::evaluate(const Batch& batch) {
  check_batch(batch);
  set_batch(batch);
  engine_->run(weights_, nullptr, 0.0f, 0.0f);
  return reduce_loss(engine_->loss());
}

StepStats GpuTrainer::step(const Batch& batch) { return step(std::vector<Batch>{batch}); }

StepStats GpuTrainer::step(const std::vector<Batch>& micro_batches) {
  require_training("step");
  if (micro_batches.empty()) fail("a training step needs at least one micro-batch");
  for (const Batch& batch : micro_batches) check_batch(batch);
  if (gpu_.fused_optimizer && micro_batches.size() > 1)
    fail("gradient accumulation needs the whole gradient before the optimizer step, and the fused optimizer step applies "
         "AdamW during the backward pass: turn the fused step off to accumulate");
  // As the CPU Trainer: the cross-entropy is the mean over every labelled position of all micro-batches, the
  // load-balancing loss the mean of the micro-batches'; gradients accumulate (in bf16) into one arena.
  int64_t counted = 0;
  StepStats stats;
  for (const Batch& batch : micro_batches) {
    counted += count_label_positions(batch);
    stats.tokens += static_cast<int64_t>(batch.batch_size) * batch.seq_len;
  }
  const float ranks = static_cast<float>(world_size());
  const float micro = static_cast<float>(micro_batches.size());
  const float ce_scale = counted > 0 ? 1.0f / (static_cast<float>(counted) * ranks) : 0.0f;
  const float aux_scale = options_.aux_loss ? config_.router_aux_loss_coef / (ranks * micro) : 0.0f;
  GpuLoss local;
  if (gpu_.fused_optimizer) {
    set_step_hyper(stats);
    set_batch(micro_batches.front());
    engine_->run(weights_, this, ce_scale, aux_scale);
    CUDA_CHECK(cudaEventRecord(optimizer_done_, optimizer_stream_));
    CUDA_CHECK(cudaStreamWaitEvent(stream_, optimizer_done_, 0));  // the next forward reads the updated parameters
    if (zero_) {  // the last group's parameters (the embedding)
      engine_->mark_communication();
      gather_pending();
    }
    local = engine_->loss();
    stats.grad_norm = std::nan("");  // never materialised as a whole
  } else {
    CUDA_CHECK(cudaMemsetAsync(grads_.data(), 0, grads_.size() * sizeof(bf16), stream_));
    for (const Batch& batch : micro_batches) {
      set_batch(batch);
      engine_->run(weights_, this, ce_scale, aux_scale);
      const GpuLoss parts = engine_->loss();
      local.ce_sum += parts.ce_sum;
      local.counted += parts.counted;
      local.aux += parts.aux / micro;
    }
    if (zero_) {
      engine_->mark_communication();
      zero_->reduce_scatter(grads_.data(), 0, layout_.total_floats(), stream_);
    } else {
      reduce_gradients(grads_.data(), 0, layout_.total_floats());
    }
    engine_->mark_optimizer();
    stats.grad_norm = std::sqrt(global_grad_norm_squared());
    if (!std::isfinite(stats.grad_norm))
      fail("step ", steps_done_ + 1, ": gradient norm is not finite; lower the learning rate");
    float grad_scale = 1.0f;
    if (options_.max_grad_norm > 0) {
      const double clip = options_.max_grad_norm / (stats.grad_norm + 1e-6);
      if (clip < 1.0) grad_scale = static_cast<float>(clip);
    }
    set_step_hyper(stats);
    if (zero_) {
      zero_->update(params_.data(), grads_.data(), 0, layout_.total_floats(), hyper_, grad_scale, stream_);
      engine_->mark_communication();
      zero_->all_gather(params_.data(), 0, layout_.total_floats(), stream_);
    } else {
      optimizer_update(groups_.back(), grads_.data(), stream_, grad_scale);
    }
  }
  const GpuLoss parts = reduce_loss(local);
  stats.counted = parts.counted;
  stats.ce_loss = parts.counted > 0 ? parts.ce_sum / static_cast<double>(parts.counted) : 0.0;
  stats.aux_loss = parts.aux;
  stats.loss = stats.ce_loss + (options_.aux_loss ? config_.router_aux_loss_coef * parts.aux : 0.0);
  return stats;
}

std::vector<float> GpuTrainer::download_params(bool keep) const {
  synchronize();
  if (zero_ && gpu_.recipe == Recipe::MixedMaster) return zero_->download_masters(layout_.total_floats(), keep, stream_);
  if (!keep) return {};
  if (master_.size() > 0) return master_.download();
  const std::vector<bf16> raw = params_.download();
  std::vector<float> out(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) out[i] = __bfloat162float(raw[i]);
  return out;
}

std::vector<float> GpuTrainer::download_grads() const {
  require_training("download_grads");
  if (gpu_.fused_optimizer) fail("download_grads: the fused optimizer step keeps no gradient arena");
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  const std::vector<bf16> raw = grads_.download();
  std::vector<float> out(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) out[i] = __bfloat162float(raw[i]);
  return out;
}

}  // namespace moetune::cuda
