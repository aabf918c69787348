// Why: the bf16 GPU engine — the same per-layer forward and backward as the CPU reference (model/cpu_engine.h), on
// fused kernels: cuDNN flash attention, cuBLAS dense and grouped expert GEMMs, a fused router, index-map permutes, a
// chunked LM head + cross-entropy that never holds the logits of the whole batch. Activations live in one device
// arena and backward scratch in another, both sized at construction from the config and the batch shape (expert
// buffers for the worst case: every token's k picks).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/weights.h"
#include "ops/cuda/attention.h"
#include "ops/cuda/gemm.h"

namespace moetune::cuda {

using GpuWeights = ModelParams<bf16>;

// Converts the uint16_t binding of a ParamLayout into bf16 pointers.
GpuWeights as_bf16(const ModelWeights16& weights);

enum class Phase { Attention, Router, Permute, ExpertGemm, OtherGemm, Loss, Optimizer, Other, Count };
const char* phase_name(Phase phase);

// Where the backward pass puts gradients. The backward runs in groups — the head (final norm + LM head), each layer
// from the last to the first, then the embedding — and asks for a gradient view before each group and reports its
// end; a trainer can thus keep all gradients (and step once), or apply the optimizer to each group as soon as it is
// complete and reuse its memory (the fused optimizer step). Only the pointers of the group in progress are used.
class GradientSink {
 public:
  virtual ~GradientSink() = default;
  virtual const GpuWeights& begin_group(int group) = 0;
  virtual void end_group(int group) = 0;
};

// Group ids: layer l is group l; then the head and the embedding.
inline int head_group(const ModelConfig& config) { return config.num_layers; }
inline int embedding_group(const ModelConfig& config) { return config.num_layers + 1; }

struct GpuLoss {
  double ce_sum = 0.0;
  int64_t counted = 0;
  double aux = 0.0;
};

// Which implementation runs the experts' grouped GEMMs: moetune's own kernel (ops/cuda/grouped_gemm.h: expert sizes
// read on the device, no host synchronisation; needs hidden and expert widths that are multiples of 64, else the
// engine falls back to cuBLAS) or cuBLAS's grouped GEMM (per-expert sizes copied to the host once per layer).
enum class GroupedGemmBackend { Moetune, Cublas };
GroupedGemmBackend parse_grouped_gemm_backend(const std::string& name);  // "moetune" | "cublas"

class GpuEngine {
 public:
  GpuEngine(const ModelConfig& config, int batch, int seq_len, cudaStream_t stream,
            GroupedGemmBackend grouped_gemm = GroupedGemmBackend::Moetune);
  ~GpuEngine();
  GpuEngine(const GpuEngine&) = delete;
  GpuEngine& operator=(const GpuEngine&) = delete;

  // Uploads a batch: ids and unshifted labels (batch, seq_len), row-major on the host.
  void set_batch(const int32_t* input_ids, const int32_t* labels);

  // Forward, loss and backward; gradients of ce_scale * ce_sum + aux_scale * aux accumulate into the views the sink
  // hands out. With sink == nullptr only the forward and the loss run (evaluation).
  void run(const GpuWeights& weights, GradientSink* sink, float ce_scale, float aux_scale);
  // Waits for the stream and returns the loss parts of the last run.
  GpuLoss loss();

  size_t activation_bytes() const { return activation_bytes_; }
  GroupedGemmBackend grouped_gemm_backend() const { return grouped_gemm_; }
  size_t workspace_bytes() const { return workspace_bytes_; }

  // Per-phase milliseconds accumulated since the last reset (needs timing enabled; costs one event per phase change).
  void enable_timing(bool on) { timing_ = on; }
  std::array<double, static_cast<int>(Phase::Count)> phase_ms();
  void reset_timing();
  // Marks the start of the optimizer phase (the trainer's work on this engine's stream).
  void mark_optimizer() { mark(Phase::Optimizer); }

 private:
  struct Layer;
  struct Buffers;
  void carve(bool allocate);
  void attention_forward(int l, const GpuWeights& w);
  void attention_backward(int l, const GpuWeights& w, const GpuWeights& g);
  void mlp_forward(int l, const GpuWeights& w);
  void mlp_backward(int l, const GpuWeights& w, const GpuWeights& g);
  void head_forward_backward(const GpuWeights& w, const GpuWeights* g, float ce_scale);
  void mark(Phase phase);
  void add_norm_grad(bf16* grad, int cols);

  ModelConfig config_;
  int batch_, seq_len_, tokens_;
  cudaStream_t stream_;
  GroupedGemmBackend grouped_gemm_;
  Gemm gemm_;
  Attention attention_;
  std::vector<Layer> layers_;
  std::unique_ptr<Buffers> b_;
  void* activation_block_ = nullptr;
  void* workspace_block_ = nullptr;
  size_t activation_bytes_ = 0, workspace_bytes_ = 0;
  std::vector<int32_t> host_targets_;
  bool timing_ = false;
  std::vector<std::pair<Phase, cudaEvent_t>> marks_;
  std::vector<cudaEvent_t> event_pool_;
  std::array<double, static_cast<int>(Phase::Count)> phase_ms_{};
};

}  // namespace moetune::cuda
