// Why: see gemm.h. Row-major products map onto column-major cuBLAS by computing C^T = op(B)^T op(A)^T, i.e. swapping
// the operands and keeping each one's transpose flag. Grouped calls need device arrays of pointers that must stay
// valid until the GEMM runs, so they are staged through a ring of pinned/device slots guarded by events.
#include "ops/cuda/gemm.h"

#include <cstring>

namespace moetune::cuda {

namespace {
constexpr size_t kWorkspaceBytes = 32u << 20;
cublasOperation_t op(bool trans) { return trans ? CUBLAS_OP_T : CUBLAS_OP_N; }
}  // namespace

Gemm::Gemm(cudaStream_t stream, int max_groups) : stream_(stream), max_groups_(max_groups) {
  CUBLAS_CHECK(cublasCreate(&handle_));
  CUBLAS_CHECK(cublasSetStream(handle_, stream_));
  CUDA_CHECK(cudaMalloc(&workspace_, kWorkspaceBytes));
  CUBLAS_CHECK(cublasSetWorkspace(handle_, workspace_, kWorkspaceBytes));
  const size_t pointers = static_cast<size_t>(kPointerSlots) * 3 * max_groups_;
  CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&pointers_host_), pointers * sizeof(void*)));
  CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&pointers_device_), pointers * sizeof(void*)));
  for (cudaEvent_t& event : slot_events_) CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
}

Gemm::~Gemm() {
  for (cudaEvent_t event : slot_events_) cudaEventDestroy(event);
  cudaFree(pointers_device_);
  cudaFreeHost(pointers_host_);
  cudaFree(workspace_);
  cublasDestroy(handle_);
}

void Gemm::matmul(bool trans_a, bool trans_b, int M, int N, int K, const bf16* A, int lda, const bf16* B, int ldb, void* C,
                  int ldc, bool c_fp32, float alpha, float beta) {
  if (M == 0 || N == 0) return;
  CUBLAS_CHECK(cublasGemmEx(handle_, op(trans_b), op(trans_a), N, M, K, &alpha, B, CUDA_R_16BF, ldb, A, CUDA_R_16BF, lda,
                            &beta, C, c_fp32 ? CUDA_R_32F : CUDA_R_16BF, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

void Gemm::linear_forward(bf16* out, const bf16* in, const bf16* weight, int rows, int in_dim, int out_dim, float beta) {
  matmul(false, true, rows, out_dim, in_dim, in, in_dim, weight, in_dim, out, out_dim, false, 1.0f, beta);
}

void Gemm::linear_backward(bf16* d_in, bf16* d_weight, const bf16* d_out, const bf16* in, const bf16* weight, int rows,
                           int in_dim, int out_dim, float beta_in) {
  if (d_in) matmul(false, false, rows, in_dim, out_dim, d_out, out_dim, weight, in_dim, d_in, in_dim, false, 1.0f, beta_in);
  matmul(true, false, out_dim, in_dim, rows, d_out, out_dim, in, in_dim, d_weight, in_dim, false, 1.0f, 1.0f);
}

void Gemm::grouped(const std::vector<Group>& groups, float beta) {
  if (groups.empty()) return;
  MT_ASSERT(static_cast<int>(groups.size()) <= max_groups_);
  const int count = static_cast<int>(groups.size());
  const int slot = pointer_slot_;
  pointer_slot_ = (pointer_slot_ + 1) % kPointerSlots;
  CUDA_CHECK(cudaEventSynchronize(slot_events_[slot]));  // the slot's previous GEMM has consumed its pointers

  const void** host = pointers_host_ + static_cast<size_t>(slot) * 3 * max_groups_;
  const void** device = pointers_device_ + static_cast<size_t>(slot) * 3 * max_groups_;
  std::vector<cublasOperation_t> trans_first(count), trans_second(count);
  std::vector<int> m(count), n(count), k(count), ld_first(count), ld_second(count), ldc(count), sizes(count, 1);
  std::vector<float> alphas(count, 1.0f), betas(count, beta);
  for (int g = 0; g < count; ++g) {
    const Group& group = groups[g];
    // Column-major: C^T (N x M) = op(B)^T (N x K) · op(A)^T (K x M).
    trans_first[g] = op(group.trans_b);
    trans_second[g] = op(group.trans_a);
    m[g] = group.N;
    n[g] = group.M;
    k[g] = group.K;
    ld_first[g] = group.ldb;
    ld_second[g] = group.lda;
    ldc[g] = group.ldc;
    host[g] = group.B;
    host[max_groups_ + g] = group.A;
    host[2 * max_groups_ + g] = group.C;
  }
  CUDA_CHECK(cudaMemcpyAsync(device, host, 3 * max_groups_ * sizeof(void*), cudaMemcpyHostToDevice, stream_));
  CUBLAS_CHECK(cublasGemmGroupedBatchedEx(handle_, trans_first.data(), trans_second.data(), m.data(), n.data(), k.data(),
                                          alphas.data(), device, CUDA_R_16BF, ld_first.data(), device + max_groups_,
                                          CUDA_R_16BF, ld_second.data(), betas.data(),
                                          const_cast<void* const*>(reinterpret_cast<const void* const*>(device + 2 * max_groups_)),
                                          CUDA_R_16BF, ldc.data(), count, sizes.data(), CUBLAS_COMPUTE_32F));
  CUDA_CHECK(cudaEventRecord(slot_events_[slot], stream_));
}

void Gemm::grouped_linear_forward(bf16* out, const bf16* in, const bf16* weights, const std::vector<int32_t>& offsets,
                                  int in_dim, int out_dim) {
  std::vector<Group> groups;
  const size_t weight_size = static_cast<size_t>(in_dim) * out_dim;
  for (size_t e = 0; e + 1 < offsets.size(); ++e) {
    const int rows = offsets[e + 1] - offsets[e];
    if (rows == 0) continue;
    groups.push_back({false, true, rows, out_dim, in_dim, in + static_cast<size_t>(offsets[e]) * in_dim, in_dim,
                      weights + e * weight_size, in_dim, out + static_cast<size_t>(offsets[e]) * out_dim, out_dim});
  }
  grouped(groups, 0.0f);
}

void Gemm::grouped_linear_backward(bf16* d_in, bf16* d_weights, const bf16* d_out, const bf16* in, const bf16* weights,
                                   const std::vector<int32_t>& offsets, int in_dim, int out_dim) {
  std::vector<Group> data_grads, weight_grads;
  const size_t weight_size = static_cast<size_t>(in_dim) * out_dim;
  for (size_t e = 0; e + 1 < offsets.size(); ++e) {
    const int rows = offsets[e + 1] - offsets[e];
    if (rows == 0) continue;
    const bf16* d_out_e = d_out + static_cast<size_t>(offsets[e]) * out_dim;
    const bf16* in_e = in + static_cast<size_t>(offsets[e]) * in_dim;
    data_grads.push_back({false, false, rows, in_dim, out_dim, d_out_e, out_dim, weights + e * weight_size, in_dim,
                          d_in + static_cast<size_t>(offsets[e]) * in_dim, in_dim});
    weight_grads.push_back({true, false, out_dim, in_dim, rows, d_out_e, out_dim, in_e, in_dim,
                            d_weights + e * weight_size, in_dim});
  }
  if (d_in) grouped(data_grads, 0.0f);
  grouped(weight_grads, 1.0f);
}

}  // namespace moetune::cuda
