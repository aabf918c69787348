// Why: see gpu_engine.h. The structure mirrors model/cpu_engine.cpp, cpu_attention.cpp and cpu_mlp.cpp line by line,
// so the two can be read side by side; the differences are bf16 storage, fused kernels and the chunked loss.
#include "gpu/gpu_engine.h"

#include <algorithm>
#include <cmath>

#include "gpu/elementwise.h"
#include "gpu/gpu_engine_internal.h"
#include "ops/cpu/document_offsets.h"
#include "ops/cuda/bias.h"
#include "ops/cuda/cross_entropy.h"
#include "ops/cuda/embedding.h"
#include "ops/cuda/grouped_gemm.h"
#include "ops/cuda/moe_permute.h"
#include "ops/cuda/rmsnorm.h"
#include "ops/cuda/rope.h"
#include "ops/cuda/router.h"
#include "ops/cuda/swiglu.h"

namespace moetune::cuda {

namespace {

constexpr int kLossChunkRows = 1024;  // rows of logits materialised at once by the LM head

// Bump allocation over one device block; the measuring pass (base == nullptr) only adds up sizes.
struct Carver {
  char* base = nullptr;
  size_t used = 0;
  template <class T>
  T* take(size_t count) {
    used = (used + 255) / 256 * 256;
    T* pointer = base ? reinterpret_cast<T*>(base + used) : nullptr;
    used += count * sizeof(T);
    return pointer;
  }
};

template <class T>
T* cast16(uint16_t* p) {
  return reinterpret_cast<T*>(p);
}

}  // namespace

GpuWeights as_bf16(const ModelWeights16& w) {
  GpuWeights out;
  out.embed = cast16<bf16>(w.embed);
  out.final_norm = cast16<bf16>(w.final_norm);
  out.lm_head = cast16<bf16>(w.lm_head);
  for (const LayerParams<uint16_t>& l : w.layers) {
    LayerParams<bf16> g;
    g.input_norm = cast16<bf16>(l.input_norm);
    g.q_proj = cast16<bf16>(l.q_proj);
    g.q_bias = cast16<bf16>(l.q_bias);
    g.k_proj = cast16<bf16>(l.k_proj);
    g.k_bias = cast16<bf16>(l.k_bias);
    g.v_proj = cast16<bf16>(l.v_proj);
    g.v_bias = cast16<bf16>(l.v_bias);
    g.o_proj = cast16<bf16>(l.o_proj);
    g.o_bias = cast16<bf16>(l.o_bias);
    g.q_norm = cast16<bf16>(l.q_norm);
    g.k_norm = cast16<bf16>(l.k_norm);
    g.post_norm = cast16<bf16>(l.post_norm);
    g.router = cast16<bf16>(l.router);
    g.experts_gate_up = cast16<bf16>(l.experts_gate_up);
    g.experts_down = cast16<bf16>(l.experts_down);
    g.shared_gate_up = cast16<bf16>(l.shared_gate_up);
    g.shared_down = cast16<bf16>(l.shared_down);
    g.shared_gate = cast16<bf16>(l.shared_gate);
    g.mlp_gate_up = cast16<bf16>(l.mlp_gate_up);
    g.mlp_down = cast16<bf16>(l.mlp_down);
    out.layers.push_back(g);
  }
  return out;
}

const char* phase_name(Phase phase) {
  static const char* names[] = {"attention", "router",    "permute",       "expert GEMMs", "other GEMMs",
                                "loss",      "optimizer", "communication", "other"};
  return names[static_cast<int>(phase)];
}

GroupedGemmBackend parse_grouped_gemm_backend(const std::string& name) {
  if (name == "sm90") return GroupedGemmBackend::Sm90;
  if (name == "moetune") return GroupedGemmBackend::Moetune;
  if (name == "cublas") return GroupedGemmBackend::Cublas;
  fail("unknown grouped GEMM backend \"", name, "\" (expected sm90, moetune or cublas)");
}

const char* grouped_gemm_backend_name(GroupedGemmBackend backend) {
  switch (backend) {
    case GroupedGemmBackend::Sm90: return "sm90";
    case GroupedGemmBackend::Moetune: return "moetune";
    case GroupedGemmBackend::Cublas: return "cublas";
  }
  return "?";
}

GpuEngine::GpuEngine(const ModelConfig& config, int batch, int seq_len, cudaStream_t stream,
                     const GpuEngineOptions& options)
    : config_(config), batch_(batch), seq_len_(seq_len), tokens_(batch * seq_len), stream_(stream),
      grouped_gemm_(usable_grouped_gemm(config, options.grouped_gemm)), recompute_(options.recompute), gemm_(stream),
      attention_(stream) {
  const ModelConfig& c = config_;
  if (grouped_gemm_ == GroupedGemmBackend::Sm90 && c.num_sparse_layers() > 0)
    sm90_gemm_ = std::make_unique<Sm90GroupedGemm>(c.held_experts());
  if (c.num_experts > kMoeMaxExperts || c.top_k > kMoeMaxTopK)
    fail("the CUDA backend supports at most ", kMoeMaxExperts, " experts and top-", kMoeMaxTopK);
  layers_.resize(c.num_layers);
  b_ = std::make_unique<Buffers>();
  ExpertSide expert_side;
  expert_side.rows = expert_rows_capacity(c, tokens_, options);
  if (options.expert_comm && options.expert_comm->size() > 1) {
    if (options.expert_comm->size() != options.expert_ranks)
      fail("expert parallelism: expert_ranks (", options.expert_ranks, ") differs from the EP group's size (",
           options.expert_comm->size(), ")");
    if (c.held_experts() * options.expert_ranks != c.num_experts ||
        c.expert_shard_begin != options.expert_comm->rank() * c.held_experts())
      fail("expert parallelism: this rank (", options.expert_comm->rank(), " of ", options.expert_ranks,
           ") must hold experts [", options.expert_comm->rank() * (c.num_experts / options.expert_ranks), ", ",
           (options.expert_comm->rank() + 1) * (c.num_experts / options.expert_ranks), "); the config holds [",
           c.expert_shard_begin, ", ", c.expert_shard_begin + c.held_experts(), ")");
    ExpertExchangeShape shape;
    shape.experts = c.num_experts;
    shape.max_rows = static_cast<int64_t>(tokens_) * c.top_k;
    shape.max_width = c.hidden_size;
    shape.slots = c.num_layers;
    shape.max_recv_rows = static_cast<int64_t>(expert_side.rows);
    shape.backend = options.expert_exchange;
    expert_side.exchanged = true;
    expert_side.exchange_buffers = options.expert_exchange == ExchangeBackend::NvlinkDirect;
    // Exchange-owned buffers: each MoE layer's expert input (kept for the weight gradient; one shared set with
    // recompute) and one transient buffer for the expert output and both expert-side gradients.
    if (expert_side.exchange_buffers) shape.expert_buffers = (recompute_ ? 1 : c.num_sparse_layers()) + 1;
    exchange_ = std::make_unique<ExpertExchange>(*options.expert_comm, shape);
    expert_side.staging = exchange_->staging_elements();
    if (options.overlap_exchange && grouped_gemm_ != GroupedGemmBackend::Cublas) {
      // The greatest priority, as the trainer's compute stream: neither side of the overlap then yields SMs to the
      // other, and both keep theirs ahead of the fused optimizer's low-priority stream.
      int least_priority = 0, greatest_priority = 0;
      CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least_priority, &greatest_priority));
      CUDA_CHECK(cudaStreamCreateWithPriority(&exchange_stream_, cudaStreamNonBlocking, greatest_priority));
      CUDA_CHECK(cudaEventCreateWithFlags(&exchange_fork_, cudaEventDisableTiming));
      CUDA_CHECK(cudaEventCreateWithFlags(&exchange_join_, cudaEventDisableTiming));
    }
  } else if (c.experts_sharded()) {
    fail("the config holds experts [", c.expert_shard_begin, ", ", c.expert_shard_begin + c.held_experts(), ") of ",
         c.num_experts, " but no expert-parallel group was given");
  }
  expert_side.transient = expert_rows_transient(expert_side.exchanged, grouped_gemm_);
  transient_expert_rows_ = expert_side.transient;
  const GpuMemoryPlan sizes = carve(c, tokens_, recompute_, expert_side, nullptr, nullptr, layers_, *b_);
  activation_bytes_ = sizes.activation_bytes;
  workspace_bytes_ = sizes.workspace_bytes;
  CUDA_CHECK(cudaMalloc(&activation_block_, activation_bytes_));
  CUDA_CHECK(cudaMalloc(&workspace_block_, workspace_bytes_));
  carve(c, tokens_, recompute_, expert_side, static_cast<char*>(activation_block_),
        static_cast<char*>(workspace_block_), layers_, *b_);
  if (expert_side.exchange_buffers) {
    bf16* transient = exchange_->expert_rows_buffer(exchange_->expert_buffers() - 1);
    b_->d_expert_rows = transient;
    int sparse = 0;
    for (int l = 0; l < c.num_layers; ++l) {
      if (!c.layer_is_sparse[l]) continue;
      layers_[l].expert_in = exchange_->expert_rows_buffer(recompute_ ? 0 : sparse++);
      layers_[l].expert_rows_out = transient;
    }
  }
  CUDA_CHECK(cudaMallocHost(&b_->host_offsets_pinned, sizeof(int32_t) * (c.num_experts + 1)));
  CUDA_CHECK(cudaMallocHost(&b_->host_scalars_pinned, sizeof(float) * 2));
  default_positions_.resize(tokens_);
  for (int t = 0; t < tokens_; ++t) default_positions_[t] = t % seq_len_;
  CUDA_CHECK(cudaMemcpy(b_->positions, default_positions_.data(), sizeof(int32_t) * tokens_, cudaMemcpyHostToDevice));
  max_documents_ = options.max_documents;
  if (max_documents_ > 0) {
    max_documents_ = std::max(max_documents_, batch_);
    CUDA_CHECK(cudaMalloc(&doc_offsets_, sizeof(int32_t) * (max_documents_ + 1)));
  }
  for (int l = 0; l < c.num_layers; ++l) {
    attention_.prepare(attention_shape(c, batch_, seq_len_, l));
    if (max_documents_ > 0) attention_.prepare_packed(attention_shape(c, batch_, seq_len_, l), max_documents_);
  }
}

GpuEngine::GpuEngine(const ModelConfig& config, int batch, int seq_len, cudaStream_t stream,
                     GroupedGemmBackend grouped_gemm)
    : GpuEngine(config, batch, seq_len, stream, GpuEngineOptions{grouped_gemm, false}) {}

GpuMemoryPlan GpuEngine::plan(const ModelConfig& config, int batch, int seq_len, const GpuEngineOptions& options) {
  std::vector<Layer> layers(config.num_layers);
  Buffers buffers{};
  const int tokens = batch * seq_len;
  ExpertSide expert_side;
  expert_side.rows = expert_rows_capacity(config, tokens, options);
  expert_side.exchanged = options.expert_ranks > 1;
  expert_side.exchange_buffers = expert_side.exchanged && options.expert_exchange == ExchangeBackend::NvlinkDirect;
  // ExpertExchange's staging (NCCL); the NVLink exchange's own buffers are outside the arenas.
  if (expert_side.exchanged && !expert_side.exchange_buffers) expert_side.staging = expert_side.rows * config.hidden_size;
  expert_side.transient = expert_rows_transient(expert_side.exchanged, usable_grouped_gemm(config, options.grouped_gemm));
  return carve(config, tokens, options.recompute, expert_side, nullptr, nullptr, layers, buffers);
}

GroupedGemmBackend GpuEngine::usable_grouped_gemm(const ModelConfig& c, GroupedGemmBackend requested) {
  if (c.hidden_size % kGroupedGemmDimMultiple != 0 || c.moe_intermediate_size % kGroupedGemmDimMultiple != 0 ||
      c.num_experts > kGroupedGemmMaxExperts)
    return GroupedGemmBackend::Cublas;
  return requested;
}

size_t GpuEngine::expert_rows_capacity(const ModelConfig& config, int tokens, const GpuEngineOptions& options) {
  const size_t rows = static_cast<size_t>(tokens) * config.top_k;
  if (options.expert_ranks <= 1) return rows;
  if (options.expert_capacity <= 0.0) return rows * options.expert_ranks;
  const double capacity = std::min<double>(options.expert_capacity, options.expert_ranks);
  return static_cast<size_t>(std::ceil(capacity * static_cast<double>(rows)));
}

GpuEngine::~GpuEngine() {
  if (exchange_stream_) {
    cudaEventDestroy(exchange_fork_);
    cudaEventDestroy(exchange_join_);
    cudaStreamDestroy(exchange_stream_);
  }
  for (cudaEvent_t event : event_pool_) cudaEventDestroy(event);
  for (auto& mark : marks_) cudaEventDestroy(mark.second);
  cudaFreeHost(b_->host_offsets_pinned);
  cudaFreeHost(b_->host_scalars_pinned);
  cudaFree(activation_block_);
  cudaFree(workspace_block_);
  cudaFree(doc_offsets_);
}

GpuMemoryPlan GpuEngine::carve(const ModelConfig& c, int tokens, bool recompute, const ExpertSide& experts,
                               char* activation_base, char* workspace_base, std::vector<Layer>& layers, Buffers& b) {
  const size_t N = tokens, H = c.hidden_size, Q = c.q_width(), KV = c.kv_width(), E = c.num_experts, K = c.top_k;
  const size_t rows = N * K, R = experts.rows, I = c.moe_intermediate_size, Id = c.dense_intermediate_size, V = c.vocab_size;
  const size_t Is = c.shared_expert_intermediate_size;
  const size_t q_norm_rows = c.qk_norm == QkNorm::PerHead ? N * c.num_heads : N;
  const size_t k_norm_rows = c.qk_norm == QkNorm::PerHead ? N * c.num_kv_heads : N;
  const bool clip = c.clip_qkv > 0;
  Carver act{activation_base};
  Carver ws{workspace_base};
  // Everything but the input of one layer; the shared set of recompute asks for both kinds (sparse and dense).
  auto carve_layer = [&](Layer& a, bool sparse, bool dense) {
    a.norm1 = act.take<bf16>(N * H);
    a.rstd1 = act.take<float>(N);
    a.q_proj = act.take<bf16>(N * Q);
    a.k_proj = act.take<bf16>(N * KV);
    a.q = act.take<bf16>(N * Q);
    a.k = act.take<bf16>(N * KV);
    a.v = act.take<bf16>(N * KV);
    if (clip) {
      const bool normed = c.qk_norm != QkNorm::None;
      a.q_unclipped = normed ? act.take<bf16>(N * Q) : a.q_proj;
      a.k_unclipped = normed ? act.take<bf16>(N * KV) : a.k_proj;
      a.v_unclipped = act.take<bf16>(N * KV);
    }
    a.q_rstd = act.take<float>(q_norm_rows);
    a.k_rstd = act.take<float>(k_norm_rows);
    a.attn_out = act.take<bf16>(N * Q);
    a.stats = act.take<float>(N * c.num_heads);
    a.mid = act.take<bf16>(N * H);
    a.norm2 = act.take<bf16>(N * H);
    a.rstd2 = act.take<float>(N);
    if (sparse) {
      a.router_logits = act.take<float>(N * E);
      a.probs = act.take<float>(N * E);
      a.top_index = act.take<int32_t>(N * K);
      a.top_weight = act.take<float>(N * K);
      a.offsets = act.take<int32_t>(E + 1);
      a.row_token = act.take<int32_t>(rows);
      a.row_slot = act.take<int32_t>(rows);
      a.token_slot_row = act.take<int32_t>(rows);
      // Transient expert rows (Layer::expert_in): the workspace's, set after carving it.
      if (!experts.transient) {
        a.gathered = act.take<bf16>(rows * H);
        a.expert_out = act.take<bf16>(rows * H);
        // Expert parallelism: the expert side's own rows (the exchange's buffers with NVLink direct, set after carving).
        const bool own_rows = experts.exchanged && !experts.exchange_buffers;
        a.expert_in = own_rows ? act.take<bf16>(R * H) : experts.exchanged ? nullptr : a.gathered;
        a.expert_rows_out = own_rows ? act.take<bf16>(R * H) : experts.exchanged ? nullptr : a.expert_out;
      }
      if (c.has_shared_expert()) {
        a.shared_gate_up = act.take<bf16>(N * 2 * Is);
        a.shared_act = act.take<bf16>(N * Is);
        a.shared_out = act.take<bf16>(N * H);
        a.shared_gate_logit = act.take<float>(N);
      }
    }
    a.gate_up = act.take<bf16>(std::max(sparse ? R * 2 * I : 0, dense ? N * 2 * Id : 0));
    const size_t act_size = std::max(sparse && !experts.transient ? R * I : 0, dense ? N * Id : 0);
    a.act = act_size > 0 ? act.take<bf16>(act_size) : nullptr;
  };
  b.ids = act.take<int32_t>(N);
  b.targets = act.take<int32_t>(N);
  b.positions = act.take<int32_t>(N);
  if (recompute) {
    for (Layer& a : layers) {
      a = Layer{};
      a.input = act.take<bf16>(N * H);
    }
    Layer shared{};
    const int sparse_layers = c.num_sparse_layers();
    carve_layer(shared, sparse_layers > 0, sparse_layers < c.num_layers);
    for (Layer& a : layers) {
      bf16* input = a.input;
      a = shared;
      a.input = input;
    }
  } else {
    for (int l = 0; l < c.num_layers; ++l) {
      Layer& a = layers[l];
      a = Layer{};
      a.input = act.take<bf16>(N * H);
      carve_layer(a, c.layer_is_sparse[l], !c.layer_is_sparse[l]);
    }
  }
  b.final_input = act.take<bf16>(N * H);
  b.final_norm = act.take<bf16>(N * H);
  b.final_rstd = act.take<float>(N);
  b.row_loss = act.take<float>(N);
  b.loss_sum = act.take<float>(1);
  b.pick_counts = act.take<float>(E);
  b.prob_sums = act.take<float>(E);
  b.aux = act.take<float>(1);
  b.d_probs_extra = act.take<float>(E);

  b.balance_scratch = ws.take<float>(router_balance_scratch_floats(tokens, c.num_experts));
  b.routing_scratch = ws.take<char>(moe_routing_scratch_bytes(tokens, c.num_experts, c.top_k));
  b.mlp_out = ws.take<bf16>(N * H);
  b.d_stream = ws.take<bf16>(N * H);
  b.d_mid = ws.take<bf16>(N * H);
  b.d_norm = ws.take<bf16>(N * H);
  b.d_tmp = ws.take<bf16>(N * H);
  b.d_final_norm = ws.take<bf16>(N * H);
  if (experts.exchanged && !experts.exchange_buffers) b.d_expert_rows = ws.take<bf16>(R * H);
  if (experts.staging > 0) b.exchange_staging = ws.take<bf16>(experts.staging);
  // One region holds either the LM head's logits chunk or the layers' buffers that live only within one layer's
  // forward or backward: the head runs after every layer's forward and before any layer's backward. The transient
  // expert rows also share the attention backward's buffers, which are used only after the MLP backward is done with
  // them.
  const size_t region = ws.used;
  b.logits_chunk = ws.take<bf16>(std::min<size_t>(N, kLossChunkRows) * V);
  const size_t head_end = ws.used;
  ws.used = region;
  const bool transient_rows = experts.transient && c.num_sparse_layers() > 0;
  b.expert_rows = transient_rows ? ws.take<bf16>(std::max(rows * H, rows * I)) : nullptr;
  const size_t expert_rows_end = ws.used;
  ws.used = region;
  b.d_attn = ws.take<bf16>(N * Q);
  b.d_q = ws.take<bf16>(N * Q);
  b.d_k = ws.take<bf16>(N * KV);
  b.d_v = ws.take<bf16>(N * KV);
  ws.used = std::max(ws.used, expert_rows_end);
  b.d_rows = ws.take<bf16>(rows * H);
  b.d_act = ws.take<bf16>(std::max({R * I, N * Id, N * Is}));
  b.d_gate_up = ws.take<bf16>(std::max({R * 2 * I, N * 2 * Id, N * 2 * Is}));
  ws.used = std::max(ws.used, head_end);
  b.d_top_weight = ws.take<float>(N * K);
  b.d_router_logits = ws.take<float>(N * E);
  b.d_router_logits16 = ws.take<bf16>(N * E);
  if (c.has_shared_expert()) b.d_shared_gate_logit = ws.take<bf16>(N);
  if (c.attention_bias || c.o_proj_bias)
    b.bias_scratch = ws.take<float>(std::max({bias_grad_scratch_floats(tokens, static_cast<int>(Q)),
                                              bias_grad_scratch_floats(tokens, static_cast<int>(KV)),
                                              bias_grad_scratch_floats(tokens, static_cast<int>(H))}));
  b.norm_grad = ws.take<float>(std::max({H, Q, KV}));
  b.norm_scratch = ws.take<float>(std::max(rmsnorm_backward_scratch_floats(static_cast<int>(q_norm_rows), static_cast<int>(std::max<size_t>(Q, c.head_dim))),
                                           rmsnorm_backward_scratch_floats(tokens, static_cast<int>(H))));
  b.embed_scratch = ws.take<char>(embedding_backward_scratch_bytes(tokens));
  if (experts.transient)
    for (int l = 0; l < c.num_layers; ++l) {
      if (!c.layer_is_sparse[l]) continue;
      Layer& a = layers[l];
      a.gathered = a.expert_in = b.expert_rows;
      a.expert_out = a.expert_rows_out = b.d_rows;
    }
  return {act.used, ws.used};
}

void GpuEngine::set_batch(const int32_t* input_ids, const int32_t* labels, const int32_t* positions,
                          const int32_t* doc_start) {
  const bool was_packed = documents_ > 0;
  documents_ = 0;
  if (doc_start) {
    if (max_documents_ == 0) fail("a packed batch was given to a GPU engine built without packing (max_documents 0)");
    const std::vector<int32_t> offsets = cpu::document_offsets(doc_start, batch_, seq_len_);
    const int count = static_cast<int>(offsets.size()) - 1;
    if (count > max_documents_)
      fail("the packed batch holds ", count, " documents; the GPU engine was planned for at most ", max_documents_);
    CUDA_CHECK(cudaMemcpy(doc_offsets_, offsets.data(), sizeof(int32_t) * offsets.size(), cudaMemcpyHostToDevice));
    documents_ = count;
  }
  if (positions || was_packed)
    CUDA_CHECK(cudaMemcpyAsync(b_->positions, positions ? positions : default_positions_.data(),
                               sizeof(int32_t) * tokens_, cudaMemcpyHostToDevice, stream_));
  host_targets_.assign(tokens_, -100);
  for (int row = 0; row < batch_; ++row)
    for (int t = 0; t + 1 < seq_len_; ++t) host_targets_[row * seq_len_ + t] = labels[row * seq_len_ + t + 1];
  CUDA_CHECK(cudaMemcpyAsync(b_->ids, input_ids, sizeof(int32_t) * tokens_, cudaMemcpyHostToDevice, stream_));
  CUDA_CHECK(cudaMemcpyAsync(b_->targets, host_targets_.data(), sizeof(int32_t) * tokens_, cudaMemcpyHostToDevice, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));  // host_targets_ may be rewritten by the next call
}

void GpuEngine::mark(Phase phase) {
  if (!timing_) return;
  cudaEvent_t event;
  if (event_pool_.empty()) {
    CUDA_CHECK(cudaEventCreate(&event));
  } else {
    event = event_pool_.back();
    event_pool_.pop_back();
  }
  CUDA_CHECK(cudaEventRecord(event, stream_));
  marks_.emplace_back(phase, event);
}

std::array<double, static_cast<int>(Phase::Count)> GpuEngine::phase_ms() {
  mark(Phase::Other);  // closes the interval that is open now
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  for (size_t i = 0; i + 1 < marks_.size(); ++i) {
    float ms = 0.0f;
    CUDA_CHECK(cudaEventElapsedTime(&ms, marks_[i].second, marks_[i + 1].second));
    phase_ms_[static_cast<int>(marks_[i].first)] += ms;
  }
  if (!marks_.empty()) {
    for (size_t i = 0; i + 1 < marks_.size(); ++i) event_pool_.push_back(marks_[i].second);
    marks_.erase(marks_.begin(), marks_.end() - 1);  // the last mark opens the next interval
  }
  return phase_ms_;
}

void GpuEngine::reset_timing() {
  phase_ms();
  phase_ms_.fill(0.0);
}

void GpuEngine::add_norm_grad(bf16* grad, int cols) {
  accumulate_f32_into_bf16(grad, b_->norm_grad, static_cast<size_t>(cols), stream_);
}

void GpuEngine::run(const GpuWeights& w, GradientSink* sink, float ce_scale, float aux_scale) {
  const ModelConfig& c = config_;
  Buffers& b = *b_;
  mark(Phase::Other);
  CUDA_CHECK(cudaMemsetAsync(b.pick_counts, 0, sizeof(float) * c.num_experts, stream_));
  CUDA_CHECK(cudaMemsetAsync(b.prob_sums, 0, sizeof(float) * c.num_experts, stream_));
  embedding_forward(layers_[0].input, b.ids, w.embed, tokens_, c.hidden_size, stream_);
  for (int l = 0; l < c.num_layers; ++l) {
    attention_forward(l, w);
    mlp_forward(l, w, false);
  }
  mark(Phase::Router);
  const double balance_rows = static_cast<double>(tokens_) * c.num_sparse_layers();
  if (balance_rows > 0)
    router_balance_loss_and_grad(b.aux, b.d_probs_extra, b.pick_counts, b.prob_sums, balance_rows, c.num_experts,
                                 aux_scale, stream_);
  head_forward_backward(w, sink ? &sink->begin_group(head_group(c)) : nullptr, ce_scale);
  if (!sink) return;
  overwrite_expert_grads_ = sink->overwrites_expert_gradients();
  sink->end_group(head_group(c));
  for (int l = c.num_layers - 1; l >= 0; --l) {
    if (recompute_ && l + 1 < c.num_layers) {  // the shared set still holds the last layer's activations
      attention_forward(l, w);
      mlp_forward(l, w, true);
    }
    const GpuWeights& g = sink->begin_group(l);
    const GradientSink::ExpertStep* step = c.layer_is_sparse[l] ? sink->expert_step(l) : nullptr;
    if (step && !can_step_experts_in_gemm())
      fail("the expert step inside the weight-gradient GEMM needs moetune's expert GEMMs (sm90 or moetune)");
    mlp_backward(l, w, g, step);
    attention_backward(l, w, g);
    sink->end_group(l);
  }
  const GpuWeights& g = sink->begin_group(embedding_group(c));
  mark(Phase::Other);
  embedding_backward(g.embed, b.d_stream, b.ids, tokens_, c.hidden_size, c.padding_idx, b.embed_scratch, stream_);
  sink->end_group(embedding_group(c));
}

GpuLoss GpuEngine::loss() {
  Buffers& b = *b_;
  CUDA_CHECK(cudaMemcpyAsync(&b.host_scalars_pinned[0], b.loss_sum, sizeof(float), cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaMemcpyAsync(&b.host_scalars_pinned[1], b.aux, sizeof(float), cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  GpuLoss result;
  result.ce_sum = b.host_scalars_pinned[0];
  for (int32_t target : host_targets_) result.counted += target != -100;
  result.aux = config_.num_sparse_layers() > 0 ? b.host_scalars_pinned[1] : 0.0;
  return result;
}

void GpuEngine::head_forward_backward(const GpuWeights& w, const GpuWeights* g, float ce_scale) {
  const ModelConfig& c = config_;
  Buffers& b = *b_;
  const int H = c.hidden_size, V = c.vocab_size;
  mark(Phase::Other);
  rmsnorm_forward(b.final_norm, b.final_rstd, b.final_input, w.final_norm, tokens_, H, c.rms_norm_eps, stream_);
  for (int begin = 0; begin < tokens_; begin += kLossChunkRows) {
    const int rows = std::min(kLossChunkRows, tokens_ - begin);
    const bf16* x = b.final_norm + static_cast<size_t>(begin) * H;
    mark(Phase::OtherGemm);
    gemm_.linear_forward(b.logits_chunk, x, w.lm_head, rows, H, V);
    mark(Phase::Loss);
    cross_entropy_forward_backward(b.logits_chunk, b.row_loss + begin, b.targets + begin, rows, V, ce_scale, stream_);
    if (g) {
      mark(Phase::OtherGemm);
      gemm_.linear_backward(b.d_final_norm + static_cast<size_t>(begin) * H, g->lm_head, b.logits_chunk, x, w.lm_head,
                            rows, H, V);
    }
  }
  mark(Phase::Loss);
  sum_floats(b.row_loss, tokens_, b.loss_sum, stream_);
  if (!g) return;
  mark(Phase::Other);
  CUDA_CHECK(cudaMemsetAsync(b.norm_grad, 0, sizeof(float) * H, stream_));
  rmsnorm_backward(b.d_stream, b.norm_grad, b.d_final_norm, b.final_input, w.final_norm, b.final_rstd, tokens_, H,
                   b.norm_scratch, stream_);
  add_norm_grad(g->final_norm, H);
}

}  // namespace moetune::cuda
