// Why: fused (flash) attention forward and backward on the GPU through cuDNN's SDPA graphs (cuDNN frontend): causal,
// optional sliding window, grouped-query heads, bf16 in/out with fp32 softmax statistics saved for the backward pass.
// The CPU twin is ops/cpu/attention.h (same shapes and mask semantics).
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <tuple>

#include "ops/cpu/attention.h"
#include "ops/cuda/cuda_check.h"

namespace moetune::cuda {

class Attention {
 public:
  explicit Attention(cudaStream_t stream);
  ~Attention();
  Attention(const Attention&) = delete;
  Attention& operator=(const Attention&) = delete;

  // Builds (once) the forward and backward plans for a shape and grows the workspace; call at start-up so memory is
  // planned before training. Returns the workspace bytes the shape needs.
  size_t prepare(const cpu::AttentionShape& shape);

  // q (B, T, heads, D), k and v (B, T, kv_heads, D), out (B, T, heads, D); stats (B, heads, T) fp32 log-sum-exp.
  void forward(bf16* out, float* stats, const bf16* q, const bf16* k, const bf16* v, const cpu::AttentionShape& shape);
  // d_q like q, d_k and d_v like k (overwritten).
  void backward(bf16* d_q, bf16* d_k, bf16* d_v, const bf16* d_out, const bf16* q, const bf16* k, const bf16* v,
                const bf16* out, const float* stats, const cpu::AttentionShape& shape);

 private:
  struct Plans;
  using Key = std::tuple<int, int, int, int, int, int, float>;
  Plans& plans(const cpu::AttentionShape& shape);
  void ensure_workspace(size_t bytes);

  cudaStream_t stream_;
  void* handle_ = nullptr;  // cudnnHandle_t (kept opaque here so this header does not pull in cuDNN)
  std::map<Key, std::unique_ptr<Plans>> plans_;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
};

}  // namespace moetune::cuda
