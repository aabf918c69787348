// Why: see attention.h. One cuDNN frontend graph per shape for the forward (with statistics) and one for the backward;
// tensors are described with strides over our (B, T, heads, D) layout, so no transposes are needed. A packed graph is
// the same graph over document slots instead of rows, with a padding mask (per-slot lengths) and ragged offsets on
// every tensor: the (B, T, heads, D) buffers read as (tokens, heads, D), token-major stats (tokens, heads).
#include "ops/cuda/attention.h"

#include <cudnn.h>

#include <algorithm>
#include <utility>
#include <vector>

#include <cudnn_frontend.h>

#include "ops/cuda/attention_ragged.h"

namespace moetune::cuda {

namespace fe = cudnn_frontend;

namespace {

enum Uid : int64_t { kQ = 1, kK, kV, kO, kStats, kDO, kDQ, kDK, kDV, kSeqLenQ, kSeqLenKV, kQOffsets, kKVOffsets, kStatsOffsets };

void check_cudnn(cudnnStatus_t status, const char* call, const char* file, int line) {
  if (status != CUDNN_STATUS_SUCCESS) fail(file, ":", line, ": ", call, " failed: ", cudnnGetErrorString(status));
}
#define CUDNN_CHECK(call) check_cudnn((call), #call, __FILE__, __LINE__)

void check_fe(fe::error_object status, const char* what, const cpu::AttentionShape& s) {
  if (status.is_bad())
    fail("cuDNN attention (", what, ") for batch ", s.batch, ", seq ", s.seq_len, ", heads ", s.heads, "/", s.kv_heads,
         ", head_dim ", s.head_dim, ", window ", s.window, ": ", status.get_message());
}

// `rows` is the graph's batch dimension: B, or the document slots of a packed graph (T then bounds a document).
std::vector<int64_t> dims(const cpu::AttentionShape& s, int rows, int heads) { return {rows, heads, s.seq_len, s.head_dim}; }
std::vector<int64_t> strides(const cpu::AttentionShape& s, int heads) {
  return {static_cast<int64_t>(s.seq_len) * heads * s.head_dim, s.head_dim, static_cast<int64_t>(heads) * s.head_dim, 1};
}

// The extra inputs of a packed graph: per-slot lengths and ragged offsets (attention_ragged.h).
struct Ragged {
  int slots;
  std::shared_ptr<fe::graph::Tensor_attributes> seq_len_q, seq_len_kv, q_offsets, kv_offsets, stats_offsets;
};

std::shared_ptr<fe::graph::Tensor_attributes> index_tensor(fe::graph::Graph& graph, const char* name, int64_t uid,
                                                           int64_t count, fe::DataType_t type) {
  return graph.tensor(fe::graph::Tensor_attributes().set_name(name).set_uid(uid).set_dim({count, 1, 1, 1})
                          .set_stride({1, 1, 1, 1}).set_data_type(type));
}

Ragged ragged_inputs(fe::graph::Graph& graph, int slots) {
  return {slots,
          index_tensor(graph, "seq_len_q", kSeqLenQ, slots, fe::DataType_t::INT32),
          index_tensor(graph, "seq_len_kv", kSeqLenKV, slots, fe::DataType_t::INT32),
          index_tensor(graph, "q_offsets", kQOffsets, slots + 1, fe::DataType_t::INT64),
          index_tensor(graph, "kv_offsets", kKVOffsets, slots + 1, fe::DataType_t::INT64),
          index_tensor(graph, "stats_offsets", kStatsOffsets, slots + 1, fe::DataType_t::INT64)};
}

// Describes a (B, T, heads, D) tensor; with `ragged`, as `ragged->slots` documents starting at `offsets`.
void describe(fe::graph::Tensor_attributes& t, const cpu::AttentionShape& s, int heads, const Ragged* ragged,
              const std::shared_ptr<fe::graph::Tensor_attributes>& offsets) {
  t.set_dim(dims(s, ragged ? ragged->slots : s.batch, heads)).set_stride(strides(s, heads));
  if (ragged) t.set_ragged_offset(offsets);
}

std::shared_ptr<fe::graph::Tensor_attributes> tensor(fe::graph::Graph& graph, const char* name, int64_t uid,
                                                     const cpu::AttentionShape& s, int heads, const Ragged* ragged,
                                                     const std::shared_ptr<fe::graph::Tensor_attributes>& offsets) {
  fe::graph::Tensor_attributes attributes;
  attributes.set_name(name).set_uid(uid);
  describe(attributes, s, heads, ragged, offsets);
  return graph.tensor(attributes);
}

// Softmax statistics: (B, heads, T) unpacked; token-major (tokens, heads) over document slots when packed.
void describe_stats(fe::graph::Tensor_attributes& t, const cpu::AttentionShape& s, const Ragged* ragged) {
  t.set_uid(kStats).set_data_type(fe::DataType_t::FLOAT);
  if (ragged) {
    t.set_dim({ragged->slots, s.heads, s.seq_len, 1})
        .set_stride({static_cast<int64_t>(s.seq_len) * s.heads, 1, s.heads, 1})
        .set_ragged_offset(ragged->stats_offsets);
  } else {
    t.set_dim({s.batch, s.heads, s.seq_len, 1}).set_stride({static_cast<int64_t>(s.heads) * s.seq_len, s.seq_len, 1, 1});
  }
}

std::shared_ptr<fe::graph::Graph> new_graph() {
  auto graph = std::make_shared<fe::graph::Graph>();
  graph->set_io_data_type(fe::DataType_t::BFLOAT16)
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  return graph;
}

void build(fe::graph::Graph& graph, cudnnHandle_t handle, const cpu::AttentionShape& s, const char* what) {
  check_fe(graph.validate(), what, s);
  check_fe(graph.build_operation_graph(handle), what, s);
  check_fe(graph.create_execution_plans({fe::HeurMode_t::A}), what, s);
  check_fe(graph.check_support(handle), what, s);
  check_fe(graph.build_plans(handle), what, s);
}

// The ragged arrays inside Attention::ragged_ for a capacity of `slots`: int32 lengths (slots), then the int64 offsets
// of Q/O, K/V and stats (slots + 1 each), every array starting on a 256-byte boundary as cudaMalloc's own do.
struct RaggedArrays {
  int32_t* lengths;
  int64_t *q_offsets, *kv_offsets, *stats_offsets;
};
size_t aligned_256(size_t bytes) { return (bytes + 255) / 256 * 256; }
size_t ragged_lengths_bytes(int slots) { return aligned_256(sizeof(int32_t) * slots); }
size_t ragged_offsets_bytes(int slots) { return aligned_256(sizeof(int64_t) * (slots + 1)); }
size_t ragged_bytes(int slots) { return ragged_lengths_bytes(slots) + 3 * ragged_offsets_bytes(slots); }
RaggedArrays ragged_arrays(void* base, int slots) {
  char* lengths = static_cast<char*>(base);
  char* q_offsets = lengths + ragged_lengths_bytes(slots);
  char* kv_offsets = q_offsets + ragged_offsets_bytes(slots);
  char* stats_offsets = kv_offsets + ragged_offsets_bytes(slots);
  return {reinterpret_cast<int32_t*>(lengths), reinterpret_cast<int64_t*>(q_offsets),
          reinterpret_cast<int64_t*>(kv_offsets), reinterpret_cast<int64_t*>(stats_offsets)};
}

}  // namespace

struct Attention::Plans {
  std::shared_ptr<fe::graph::Graph> forward, backward;
  size_t workspace = 0;
};

// The packed graphs of one shape: buckets[i] = (slots, plans), slots ascending, the last = max_docs.
struct Attention::PackedPlans {
  std::vector<std::pair<int, std::unique_ptr<Plans>>> buckets;
};

std::unique_ptr<Attention::Plans> Attention::make_plans(void* cudnn, const cpu::AttentionShape& s, int slots) {
  auto handle = static_cast<cudnnHandle_t>(cudnn);
  auto result = std::make_unique<Plans>();
  const int64_t tokens = static_cast<int64_t>(s.batch) * s.seq_len;
  const char* forward_name = slots > 0 ? "packed forward" : "forward";
  const char* backward_name = slots > 0 ? "packed backward" : "backward";

  auto configure = [&](auto attributes, const Ragged* ragged) {
    attributes.set_attn_scale(s.scale).set_causal_mask(true);
    if (s.window > 0) attributes.set_diagonal_band_left_bound(s.window);
    if (ragged)
      attributes.set_padding_mask(true)
          .set_seq_len_q(ragged->seq_len_q)
          .set_seq_len_kv(ragged->seq_len_kv)
          .set_max_total_seq_len_q(tokens)
          .set_max_total_seq_len_kv(tokens);
    return attributes;
  };

  result->forward = new_graph();
  {
    fe::graph::Graph& graph = *result->forward;
    const Ragged ragged = slots > 0 ? ragged_inputs(graph, slots) : Ragged{};
    const Ragged* r = slots > 0 ? &ragged : nullptr;
    auto q = tensor(graph, "Q", kQ, s, s.heads, r, ragged.q_offsets);
    auto k = tensor(graph, "K", kK, s, s.kv_heads, r, ragged.kv_offsets);
    auto v = tensor(graph, "V", kV, s, s.kv_heads, r, ragged.kv_offsets);
    auto options = configure(fe::graph::SDPA_attributes().set_name("sdpa_forward").set_generate_stats(true), r);
    auto [o, stats] = graph.sdpa(q, k, v, options);
    o->set_output(true).set_uid(kO);
    describe(*o, s, s.heads, r, ragged.q_offsets);
    stats->set_output(true);
    if (r)
      describe_stats(*stats, s, r);
    else
      stats->set_uid(kStats).set_data_type(fe::DataType_t::FLOAT);
    build(graph, handle, s, forward_name);
  }
  result->backward = new_graph();
  {
    fe::graph::Graph& graph = *result->backward;
    const Ragged ragged = slots > 0 ? ragged_inputs(graph, slots) : Ragged{};
    const Ragged* r = slots > 0 ? &ragged : nullptr;
    auto q = tensor(graph, "Q", kQ, s, s.heads, r, ragged.q_offsets);
    auto k = tensor(graph, "K", kK, s, s.kv_heads, r, ragged.kv_offsets);
    auto v = tensor(graph, "V", kV, s, s.kv_heads, r, ragged.kv_offsets);
    auto o = tensor(graph, "O", kO, s, s.heads, r, ragged.q_offsets);
    auto d_o = tensor(graph, "dO", kDO, s, s.heads, r, ragged.q_offsets);
    fe::graph::Tensor_attributes stats_attributes;
    stats_attributes.set_name("Stats");
    describe_stats(stats_attributes, s, r);
    auto stats = graph.tensor(stats_attributes);
    auto options = configure(fe::graph::SDPA_backward_attributes().set_name("sdpa_backward"), r);
    auto [d_q, d_k, d_v] = graph.sdpa_backward(q, k, v, o, d_o, stats, options);
    d_q->set_output(true).set_uid(kDQ);
    describe(*d_q, s, s.heads, r, ragged.q_offsets);
    d_k->set_output(true).set_uid(kDK);
    describe(*d_k, s, s.kv_heads, r, ragged.kv_offsets);
    d_v->set_output(true).set_uid(kDV);
    describe(*d_v, s, s.kv_heads, r, ragged.kv_offsets);
    build(graph, handle, s, backward_name);
  }
  result->workspace = std::max<size_t>(result->forward->get_workspace_size(), result->backward->get_workspace_size());
  return result;
}

Attention::Attention(cudaStream_t stream) : stream_(stream) {
  const size_t version = cudnnGetVersion();
  if (version < 90000) fail("cuDNN ", version, " is too old: moetune's attention needs cuDNN 9 or newer");
  cudnnHandle_t handle;
  CUDNN_CHECK(cudnnCreate(&handle));
  CUDNN_CHECK(cudnnSetStream(handle, stream_));
  handle_ = handle;
}

Attention::~Attention() {
  plans_.clear();
  packed_.clear();
  if (workspace_) cudaFree(workspace_);
  if (ragged_) cudaFree(ragged_);
  cudnnDestroy(static_cast<cudnnHandle_t>(handle_));
}

void Attention::ensure_workspace(size_t bytes) {
  if (bytes <= workspace_bytes_) return;
  if (workspace_) CUDA_CHECK(cudaFree(workspace_));
  CUDA_CHECK(cudaMalloc(&workspace_, bytes));
  workspace_bytes_ = bytes;
}

Attention::Plans& Attention::plans(const cpu::AttentionShape& s) {
  const Key key{s.batch, s.seq_len, s.heads, s.kv_heads, s.head_dim, s.window, s.scale};
  auto found = plans_.find(key);
  if (found != plans_.end()) return *found->second;
  std::unique_ptr<Plans> result = make_plans(handle_, s, 0);
  ensure_workspace(result->workspace);
  return *plans_.emplace(key, std::move(result)).first->second;
}

size_t Attention::prepare(const cpu::AttentionShape& shape) { return plans(shape).workspace; }

size_t Attention::prepare_packed(const cpu::AttentionShape& s, int max_docs) {
  const int64_t tokens = static_cast<int64_t>(s.batch) * s.seq_len;
  if (max_docs < s.batch || max_docs > tokens)
    fail("packed attention: max_docs ", max_docs, " must lie in [batch ", s.batch, ", batch * seq_len ", tokens, "]");
  const Key key{s.batch, s.seq_len, s.heads, s.kv_heads, s.head_dim, s.window, s.scale};
  auto found = packed_.find(key);
  if (found != packed_.end() && found->second->buckets.back().first >= max_docs) {
    size_t bytes = 0;
    for (const auto& bucket : found->second->buckets) bytes = std::max(bytes, bucket.second->workspace);
    return bytes;
  }
  auto result = std::make_unique<PackedPlans>();
  size_t bytes = 0;
  for (int64_t slots = s.batch;; slots *= 2) {
    const int n = static_cast<int>(std::min<int64_t>(slots, max_docs));
    result->buckets.emplace_back(n, make_plans(handle_, s, n));
    bytes = std::max(bytes, result->buckets.back().second->workspace);
    if (n == max_docs) break;
  }
  ensure_workspace(bytes);
  if (max_docs > ragged_slots_) {
    if (ragged_) CUDA_CHECK(cudaFree(ragged_));
    CUDA_CHECK(cudaMalloc(&ragged_, ragged_bytes(max_docs)));
    ragged_slots_ = max_docs;
  }
  packed_[key] = std::move(result);
  return bytes;
}

Attention::Plans& Attention::packed_plans(const cpu::AttentionShape& s, const Documents& docs) {
  const Key key{s.batch, s.seq_len, s.heads, s.kv_heads, s.head_dim, s.window, s.scale};
  auto found = packed_.find(key);
  if (found == packed_.end())
    fail("packed attention for batch ", s.batch, ", seq ", s.seq_len, ", heads ", s.heads, "/", s.kv_heads,
         ", head_dim ", s.head_dim, ", window ", s.window, " was not prepared (call prepare_packed first)");
  const auto& buckets = found->second->buckets;
  if (docs.count < s.batch || docs.count > buckets.back().first)
    fail("packed attention: ", docs.count, " documents in a batch of ", s.batch, " rows; prepared for ", s.batch, " to ",
         buckets.back().first);
  auto bucket = std::find_if(buckets.begin(), buckets.end(), [&](const auto& b) { return b.first >= docs.count; });
  const int slots = bucket->first;
  const RaggedArrays arrays = ragged_arrays(ragged_, ragged_slots_);
  ragged_attention_offsets(arrays.lengths, arrays.q_offsets, arrays.kv_offsets, arrays.stats_offsets, docs.offsets,
                           docs.count, slots, s.heads * s.head_dim, s.kv_heads * s.head_dim, s.heads, stream_);
  return *bucket->second;
}

void Attention::forward(bf16* out, float* stats, const bf16* q, const bf16* k, const bf16* v, const cpu::AttentionShape& s) {
  Plans& p = plans(s);
  std::unordered_map<int64_t, void*> pack = {{kQ, const_cast<bf16*>(q)}, {kK, const_cast<bf16*>(k)},
                                             {kV, const_cast<bf16*>(v)}, {kO, out}, {kStats, stats}};
  check_fe(p.forward->execute(static_cast<cudnnHandle_t>(handle_), pack, workspace_), "forward execute", s);
}

void Attention::backward(bf16* d_q, bf16* d_k, bf16* d_v, const bf16* d_out, const bf16* q, const bf16* k, const bf16* v,
                         const bf16* out, const float* stats, const cpu::AttentionShape& s) {
  Plans& p = plans(s);
  std::unordered_map<int64_t, void*> pack = {
      {kQ, const_cast<bf16*>(q)},     {kK, const_cast<bf16*>(k)},           {kV, const_cast<bf16*>(v)},
      {kO, const_cast<bf16*>(out)},   {kDO, const_cast<bf16*>(d_out)},      {kStats, const_cast<float*>(stats)},
      {kDQ, d_q},                     {kDK, d_k},                            {kDV, d_v}};
  check_fe(p.backward->execute(static_cast<cudnnHandle_t>(handle_), pack, workspace_), "backward execute", s);
}

namespace {

// The variant-pack entries of the ragged inputs: one lengths array serves both Q and K/V (a document is its own keys).
void add_ragged(std::unordered_map<int64_t, void*>& pack, void* ragged, int capacity) {
  const RaggedArrays arrays = ragged_arrays(ragged, capacity);
  pack[kSeqLenQ] = arrays.lengths;
  pack[kSeqLenKV] = arrays.lengths;
  pack[kQOffsets] = arrays.q_offsets;
  pack[kKVOffsets] = arrays.kv_offsets;
  pack[kStatsOffsets] = arrays.stats_offsets;
}

}  // namespace

void Attention::forward_packed(bf16* out, float* stats, const bf16* q, const bf16* k, const bf16* v,
                               const cpu::AttentionShape& s, const Documents& docs) {
  Plans& p = packed_plans(s, docs);
  std::unordered_map<int64_t, void*> pack = {{kQ, const_cast<bf16*>(q)}, {kK, const_cast<bf16*>(k)},
                                             {kV, const_cast<bf16*>(v)}, {kO, out}, {kStats, stats}};
  add_ragged(pack, ragged_, ragged_slots_);
  check_fe(p.forward->execute(static_cast<cudnnHandle_t>(handle_), pack, workspace_), "packed forward execute", s);
}

void Attention::backward_packed(bf16* d_q, bf16* d_k, bf16* d_v, const bf16* d_out, const bf16* q, const bf16* k,
                                const bf16* v, const bf16* out, const float* stats, const cpu::AttentionShape& s,
                                const Documents& docs) {
  Plans& p = packed_plans(s, docs);
  std::unordered_map<int64_t, void*> pack = {
      {kQ, const_cast<bf16*>(q)},     {kK, const_cast<bf16*>(k)},           {kV, const_cast<bf16*>(v)},
      {kO, const_cast<bf16*>(out)},   {kDO, const_cast<bf16*>(d_out)},      {kStats, const_cast<float*>(stats)},
      {kDQ, d_q},                     {kDK, d_k},                            {kDV, d_v}};
  add_ragged(pack, ragged_, ragged_slots_);
  check_fe(p.backward->execute(static_cast<cudnnHandle_t>(handle_), pack, workspace_), "packed backward execute", s);
}

}  // namespace moetune::cuda
