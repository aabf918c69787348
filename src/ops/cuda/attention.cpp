// Why: see attention.h. One cuDNN frontend graph per shape for the forward (with statistics) and one for the backward;
// tensors are described with strides over our (B, T, heads, D) layout, so no transposes are needed.
#include "ops/cuda/attention.h"

#include <cudnn.h>

#include <cudnn_frontend.h>

namespace moetune::cuda {

namespace fe = cudnn_frontend;

namespace {

enum Uid : int64_t { kQ = 1, kK, kV, kO, kStats, kDO, kDQ, kDK, kDV };

void check_cudnn(cudnnStatus_t status, const char* call, const char* file, int line) {
  if (status != CUDNN_STATUS_SUCCESS) fail(file, ":", line, ": ", call, " failed: ", cudnnGetErrorString(status));
}
#define CUDNN_CHECK(call) check_cudnn((call), #call, __FILE__, __LINE__)

void check_fe(fe::error_object status, const char* what, const cpu::AttentionShape& s) {
  if (status.is_bad())
    fail("cuDNN attention (", what, ") for batch ", s.batch, ", seq ", s.seq_len, ", heads ", s.heads, "/", s.kv_heads,
         ", head_dim ", s.head_dim, ", window ", s.window, ": ", status.get_message());
}

std::vector<int64_t> dims(const cpu::AttentionShape& s, int heads) { return {s.batch, heads, s.seq_len, s.head_dim}; }
std::vector<int64_t> strides(const cpu::AttentionShape& s, int heads) {
  return {static_cast<int64_t>(s.seq_len) * heads * s.head_dim, s.head_dim, static_cast<int64_t>(heads) * s.head_dim, 1};
}

std::shared_ptr<fe::graph::Tensor_attributes> tensor(fe::graph::Graph& graph, const char* name, int64_t uid,
                                                     const cpu::AttentionShape& s, int heads) {
  return graph.tensor(fe::graph::Tensor_attributes().set_name(name).set_uid(uid).set_dim(dims(s, heads)).set_stride(strides(s, heads)));
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

}  // namespace

struct Attention::Plans {
  std::shared_ptr<fe::graph::Graph> forward, backward;
  size_t workspace = 0;
};

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
  if (workspace_) cudaFree(workspace_);
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
  auto handle = static_cast<cudnnHandle_t>(handle_);
  auto result = std::make_unique<Plans>();

  auto configure = [&](auto attributes) {
    attributes.set_attn_scale(s.scale).set_causal_mask(true);
    if (s.window > 0) attributes.set_diagonal_band_left_bound(s.window);
    return attributes;
  };

  result->forward = new_graph();
  {
    fe::graph::Graph& graph = *result->forward;
    auto q = tensor(graph, "Q", kQ, s, s.heads), k = tensor(graph, "K", kK, s, s.kv_heads), v = tensor(graph, "V", kV, s, s.kv_heads);
    auto options = configure(fe::graph::SDPA_attributes().set_name("sdpa_forward").set_generate_stats(true));
    auto [o, stats] = graph.sdpa(q, k, v, options);
    o->set_output(true).set_uid(kO).set_dim(dims(s, s.heads)).set_stride(strides(s, s.heads));
    stats->set_output(true).set_uid(kStats).set_data_type(fe::DataType_t::FLOAT);
    build(graph, handle, s, "forward");
  }
  result->backward = new_graph();
  {
    fe::graph::Graph& graph = *result->backward;
    auto q = tensor(graph, "Q", kQ, s, s.heads), k = tensor(graph, "K", kK, s, s.kv_heads), v = tensor(graph, "V", kV, s, s.kv_heads);
    auto o = tensor(graph, "O", kO, s, s.heads), d_o = tensor(graph, "dO", kDO, s, s.heads);
    auto stats = graph.tensor(fe::graph::Tensor_attributes()
                                  .set_name("Stats")
                                  .set_uid(kStats)
                                  .set_dim({s.batch, s.heads, s.seq_len, 1})
                                  .set_stride({static_cast<int64_t>(s.heads) * s.seq_len, s.seq_len, 1, 1})
                                  .set_data_type(fe::DataType_t::FLOAT));
    auto options = configure(fe::graph::SDPA_backward_attributes().set_name("sdpa_backward"));
    auto [d_q, d_k, d_v] = graph.sdpa_backward(q, k, v, o, d_o, stats, options);
    d_q->set_output(true).set_uid(kDQ).set_dim(dims(s, s.heads)).set_stride(strides(s, s.heads));
    d_k->set_output(true).set_uid(kDK).set_dim(dims(s, s.kv_heads)).set_stride(strides(s, s.kv_heads));
    d_v->set_output(true).set_uid(kDV).set_dim(dims(s, s.kv_heads)).set_stride(strides(s, s.kv_heads));
    build(graph, handle, s, "backward");
  }
  result->workspace = std::max<size_t>(result->forward->get_workspace_size(), result->backward->get_workspace_size());
  ensure_workspace(result->workspace);
  return *plans_.emplace(key, std::move(result)).first->second;
}

size_t Attention::prepare(const cpu::AttentionShape& shape) { return plans(shape).workspace; }

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

}  // namespace moetune::cuda
