// Why: the bf16 GPU engine — the same per-layer forward and backward as the CPU reference (model/cpu_engine.h), on
// fused kernels: cuDNN flash attention, cuBLAS dense GEMMs, grouped expert GEMMs (CUTLASS wgmma on Hopper), a fused
// router, index-map permutes, a chunked LM head + cross-entropy that never holds the logits of the whole batch.
// Activations live in one device arena and backward scratch in another, both sized at construction from the config,
// the batch shape and the recompute option (expert buffers for the worst case: every token's k picks).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gpu/expert_exchange.h"
#include "model/config.h"
#include "model/weights.h"
#include "ops/cuda/attention.h"
#include "ops/cuda/gemm.h"
#include "ops/cuda/grouped_gemm_sm90.h"

namespace moetune::cuda {

using GpuWeights = ModelParams<bf16>;

// Converts the uint16_t binding of a ParamLayout into bf16 pointers.
GpuWeights as_bf16(const ModelWeights16& weights);

enum class Phase { Attention, Router, Permute, ExpertGemm, OtherGemm, Loss, Optimizer, Communication, Other, Count };
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
  // Whether the routed experts' weight gradients (experts_gate_up, experts_down of each layer's view) are to be written
  // rather than added to: then their part of the buffer need not be cleared between groups (the fused step's buffers).
  // Every other gradient is always added to.
  virtual bool overwrites_expert_gradients() const { return false; }
  // The routed experts' AdamW step inside their weight-gradient GEMMs (ops/cuda/grouped_gemm.h: grouped_gemm_adamw):
  // layer l's moments and the step for experts_gate_up and experts_down, or null: their gradients then go into
  // begin_group's view as above. Non-null only when the engine runs its own expert GEMMs (GpuEngine::
  // can_step_experts_in_gemm); the view's expert pointers are then never used. Asked between begin_group(l) and
  // end_group(l).
  struct ExpertStep {
    GroupedAdamW gate_up, down;
  };
  virtual const ExpertStep* expert_step(int /*layer*/) { return nullptr; }
};

// Group ids: layer l is group l; then the head and the embedding.
inline int head_group(const ModelConfig& config) { return config.num_layers; }
inline int embedding_group(const ModelConfig& config) { return config.num_layers + 1; }

struct GpuLoss {
  double ce_sum = 0.0;
  int64_t counted = 0;
  double aux = 0.0;
};

// Which implementation runs the experts' grouped GEMMs: the Hopper kernel (ops/cuda/grouped_gemm_sm90.h: CUTLASS
// wgmma + TMA), moetune's portable kernel (ops/cuda/grouped_gemm.h: mma.sync) — both read the expert sizes on the
// device, no host synchronisation, and need hidden and expert widths that are multiples of 64, else the engine falls
// back to cuBLAS — or cuBLAS's grouped GEMM (per-expert sizes copied to the host once per layer).
enum class GroupedGemmBackend { Sm90, Moetune, Cublas };
GroupedGemmBackend parse_grouped_gemm_backend(const std::string& name);  // "sm90" | "moetune" | "cublas"
const char* grouped_gemm_backend_name(GroupedGemmBackend backend);

struct GpuEngineOptions {
  GroupedGemmBackend grouped_gemm = GroupedGemmBackend::Sm90;
  // Per-layer activation recompute: the forward keeps only each layer's input (N, H) and the backward of layer l first
  // re-runs layer l's forward into one set of layer activations shared by all layers (the last layer's is still there
  // from the forward). Activation memory: one layer's activations + L layer inputs instead of L layers' activations.
  // Same kernels on the same inputs, so losses and gradients are bitwise those of recompute off.
  bool recompute = false;
  // Expert parallelism: the EP group's communicator (parallel/nccl_comm.h; null or one rank: none). The config must
  // then hold this rank's block of experts (parallel/expert_shard.h: experts [rank*E/P, (rank+1)*E/P)); every MoE
  // layer sends each routed row to the rank holding its expert and brings the result back (gpu/expert_exchange.h).
  const parallel::NcclComm* expert_comm = nullptr;
  int expert_ranks = 1;  // the EP group's size (plan() needs it without a communicator)
  // Rows this rank's experts can take per layer, as a multiple of the rows one rank routes (tokens * top_k): 0 = the
  // worst case (expert_ranks: every rank sends every row here). Smaller saves memory and fails (on every rank, with a
  // message) on a step whose routing is more unbalanced.
  double expert_capacity = 0.0;
  // How rows move between the EP group's GPUs: NCCL send/receive through a staging buffer, or one kernel writing
  // straight into the owner's expert buffer over NVLink (gpu/expert_exchange.h).
  ExchangeBackend expert_exchange = ExchangeBackend::Nccl;
  // Expert parallelism with a device-offset grouped GEMM (Sm90, Moetune): in each MoE layer's backward, the return
  // exchange of d(expert input) (from_experts) runs on a second stream of the engine, beside the experts' last weight
  // gradient (gate_up), which it does not touch; off: one after the other on the engine's stream. Same kernels on the
  // same inputs either way, so gradients are bitwise those of overlap off. cuBLAS's grouped GEMM always runs serially.
  bool overlap_exchange = true;
  // Packed batches (several documents per row, attention restricted to each document): the most documents one batch
  // may hold (0 = packing off). The attention plans for packed batches are built at construction for this bound.
  int max_documents = 0;
};

// Device bytes of the engine's two arenas, planned from the config, the batch shape and the options.
struct GpuMemoryPlan {
  size_t activation_bytes = 0;  // kept from the forward for the backward (+ ids, targets, positions, loss statistics)
  size_t workspace_bytes = 0;   // one layer's scratch (forward and backward) and the LM head's logits chunk
};

class GpuEngine {
 public:
  GpuEngine(const ModelConfig& config, int batch, int seq_len, cudaStream_t stream, const GpuEngineOptions& options = {});
  // The same with options {grouped_gemm, recompute off}.
  GpuEngine(const ModelConfig& config, int batch, int seq_len, cudaStream_t stream, GroupedGemmBackend grouped_gemm);
  ~GpuEngine();
  GpuEngine(const GpuEngine&) = delete;
  GpuEngine& operator=(const GpuEngine&) = delete;

  // Uploads a batch: ids and unshifted labels (batch, seq_len), row-major on the host. A packed batch also gives
  // positions (batch, seq_len: RoPE positions restarting per document) and doc_start (batch, seq_len, as
  // ops/cpu/attention.h); it needs max_documents > 0 and at most that many documents (including padding tails).
  void set_batch(const int32_t* input_ids, const int32_t* labels, const int32_t* positions = nullptr,
                 const int32_t* doc_start = nullptr);

  // Forward, loss and backward; gradients of ce_scale * ce_sum + aux_scale * aux accumulate into the views the sink
  // hands out. With sink == nullptr only the forward and the loss run (evaluation).
  void run(const GpuWeights& weights, GradientSink* sink, float ce_scale, float aux_scale);
  // Waits for the stream and returns the loss parts of the last run.
  GpuLoss loss();

  // What an engine of this shape allocates (host-only arithmetic: no GPU needed).
  static GpuMemoryPlan plan(const ModelConfig& config, int batch, int seq_len, const GpuEngineOptions& options = {});
  size_t activation_bytes() const { return activation_bytes_; }
  GroupedGemmBackend grouped_gemm_backend() const { return grouped_gemm_; }
  // Whether a GradientSink may hand out ExpertSteps: the expert GEMMs are moetune's (sm90 or portable), not cuBLAS's.
  bool can_step_experts_in_gemm() const { return grouped_gemm_ != GroupedGemmBackend::Cublas; }
  bool recompute() const { return recompute_; }
  // Whether the backward's return exchange overlaps the last expert weight gradient (GpuEngineOptions::
  // overlap_exchange, in effect: expert parallelism and a device-offset grouped GEMM).
  bool overlaps_exchange() const { return exchange_stream_ != nullptr; }
  size_t workspace_bytes() const { return workspace_bytes_; }

  // Per-phase milliseconds accumulated since the last reset (needs timing enabled; costs one event per phase change).
  void enable_timing(bool on) { timing_ = on; }
  std::array<double, static_cast<int>(Phase::Count)> phase_ms();
  void reset_timing();
  // Marks the start of the optimizer phase (the trainer's work on this engine's stream).
  void mark_optimizer() { mark(Phase::Optimizer); }
  // Marks the start of communication on this engine's stream (the trainer's gradient reduction).
  void mark_communication() { mark(Phase::Communication); }

 private:
  struct Layer;
  struct Buffers;
  // How the expert side of MoE layers is laid out. rows: the rows this rank's experts take per layer (tokens * top_k
  // without expert parallelism); exchanged: expert parallelism on; exchange_buffers: the exchange owns the expert-side
  // row buffers (NVLink direct: peers write into them), so the arenas do not hold them; staging: its staging elements;
  // transient: the layers keep no expert row buffers (expert_rows_transient in gpu_engine_internal.h).
  struct ExpertSide {
    size_t rows = 0, staging = 0;
    bool exchanged = false, exchange_buffers = false, transient = false;
  };
  // The grouped GEMM backend the engine runs for `requested`: cuBLAS's when the widths or the expert count do not suit
  // moetune's kernels.
  static GroupedGemmBackend usable_grouped_gemm(const ModelConfig& config, GroupedGemmBackend requested);
  // Bump-allocates both arenas (bases nullptr: only measures) and points `layers` and `b` into them.
  static GpuMemoryPlan carve(const ModelConfig& config, int tokens, bool recompute, const ExpertSide& experts,
                             char* activation_base, char* workspace_base, std::vector<Layer>& layers, Buffers& b);
  static size_t expert_rows_capacity(const ModelConfig& config, int tokens, const GpuEngineOptions& options);
  void attention_forward(int l, const GpuWeights& w);
  void attention_backward(int l, const GpuWeights& w, const GpuWeights& g);
  // recomputing: the re-run before layer l's backward; it rebuilds what the backward reads and skips the rest (the
  // load-balancing statistics, the MLP output and the residual add into the next layer's input; with transient expert
  // rows also the experts' activation and outputs).
  void mlp_forward(int l, const GpuWeights& w, bool recomputing);
  // step: the sink's ExpertStep for layer l, or null.
  void mlp_backward(int l, const GpuWeights& w, const GpuWeights& g, const GradientSink::ExpertStep* step);
  struct ExpertRows {
    int experts = 0;                 // experts on this rank
    long rows = 0;                   // rows they take
    const int32_t* offsets = nullptr;  // (experts + 1) device
    bool own = true;                 // a device-offset grouped GEMM (else cuBLAS's, with Layer::host_offsets)
  };
  ExpertRows expert_rows(int l, bool forward);
  // One grouped product of the experts on the device-offset backends (grouped_gemm.h's contract).
  void expert_gemm(GroupedLayout layout, const ExpertRows& x, int a_cols, int c_cols, const bf16* A, const bf16* B,
                   bf16* C);
  void shared_expert_forward(int l, const GpuWeights& w);
  void shared_expert_backward(int l, const GpuWeights& w, const GpuWeights& g);
  void head_forward_backward(const GpuWeights& w, const GpuWeights* g, float ce_scale);
  void mark(Phase phase);
  void add_norm_grad(bf16* grad, int cols);

  ModelConfig config_;
  int batch_, seq_len_, tokens_;
  cudaStream_t stream_;
  GroupedGemmBackend grouped_gemm_;
  std::unique_ptr<Sm90GroupedGemm> sm90_gemm_;  // GroupedGemmBackend::Sm90 only
  bool recompute_;
  bool transient_expert_rows_ = false;  // ExpertSide::transient
  bool overwrite_expert_grads_ = false;  // the current run's sink->overwrites_expert_gradients()
  Gemm gemm_;
  Attention attention_;
  std::vector<Layer> layers_;
  std::unique_ptr<Buffers> b_;
  std::unique_ptr<ExpertExchange> exchange_;  // expert parallelism only
  // overlaps_exchange() only: the stream the backward's from_experts runs on (the greatest priority, as the trainer's
  // compute stream), forked from stream_ at exchange_fork_ and joined back into it at exchange_join_ (mlp_backward).
  cudaStream_t exchange_stream_ = nullptr;
  cudaEvent_t exchange_fork_ = nullptr, exchange_join_ = nullptr;
  int max_documents_ = 0;
  int32_t* doc_offsets_ = nullptr;  // (max_documents + 1) device: the packed batch's document offsets
  int documents_ = 0;               // documents of the current batch; 0: not packed
  std::vector<int32_t> default_positions_;  // (N) t % seq_len
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
