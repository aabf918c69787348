// Why: the GPU twin of ops/cpu/adamw.h: PyTorch's torch.optim.AdamW (single-tensor path) over one flat parameter
// buffer, and the global gradient norm used for clipping. The flat buffer is described by spans (one per parameter
// tensor, or per group of tensors sharing the decay setting), so one launch updates every parameter:
//   g = grad_scale * grad                 (the clipping factor, or 1)
//   p *= 1 - lr * wd                      (only in spans with decay)
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// The element arithmetic is fp32 with fused multiply-adds, the hardware's square root and reciprocal (within 2 ulp) and
// the step's constants folded on the host (1/sqrt(1 - b2^t), -lr/(1 - b1^t)): with fp32 states an update agrees with
// the CPU twin's to a few ulp, not bit for bit. The exactly rounded divisions and square root made the kernel bound by
// instruction issue rather than by memory (ncu: 86% SM throughput, 45% DRAM). Elements outside every span are left
// untouched.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "ops/cpu/adamw.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/device_buffer.h"

namespace moetune::cuda {

using AdamWHyper = cpu::AdamWHyper;  // lr, beta1, beta2, eps, weight_decay, step (1-based, after this update)

// Elements [offset, offset + count) of the flat buffers. A span list is sorted by offset and its spans are disjoint.
struct AdamWSpan {
  size_t offset, count;
  bool decay;  // apply weight decay in this span (matrices: yes; norms, biases, embeddings: per the recipe)
};

// The spans of a flat buffer of `total` elements, on the device, with a lookup table giving for each tile of the
// kernels (kAdamWTile elements) the span holding all of it, or else the first span that reaches it — so a block starts
// streaming data after one load instead of a binary search. Built once per buffer layout (the spans never change).
constexpr size_t kAdamWTile = 2048;
class AdamWPlan {
 public:
  AdamWPlan() = default;
  AdamWPlan(const std::vector<AdamWSpan>& spans, size_t total);
  const AdamWSpan* spans() const { return spans_.data(); }
  const int32_t* tile_info() const { return tile_info_.data(); }
  int span_count() const { return static_cast<int>(spans_.size()); }
  size_t total() const { return total_; }

 private:
  DeviceBuffer<AdamWSpan> spans_;
  // (ceil(total / kAdamWTile)): 2 s + decay when span s covers the whole (full) tile, else -(first span reaching it) - 1
  DeviceBuffer<int32_t> tile_info_;
  size_t total_ = 0;
};

// All-bf16 variant: params, m, v (plan.total()) bf16, read to fp32, updated, rounded back (round-to-nearest).
// grads bf16. All buffers must start 16-byte aligned (as cudaMalloc returns them): the kernels move 8 elements per
// access.
void adamw_bf16(bf16* params, const bf16* grads, bf16* m, bf16* v, const AdamWPlan& plan, AdamWHyper h,
                float grad_scale, cudaStream_t stream);

// fp32-master variant: master, m, v fp32 are the optimizer's state; params bf16 receives the rounded updated master
// (the copy the forward pass reads). grads bf16.
void adamw_master(bf16* params, float* master, const bf16* grads, float* m, float* v, const AdamWPlan& plan,
                  AdamWHyper h, float grad_scale, cudaStream_t stream);

// Floats of scratch grad_norm_squared needs (a fixed number, independent of count and of the device).
size_t grad_norm_scratch_floats();

// *result_device (one float, overwritten) = sum of g^2 over grads (count), in fp32: a fixed grid of
// grad_norm_scratch_floats() blocks writes one partial sum each into scratch, then one block adds them in a fixed
// order, so the result is deterministic. The caller takes the square root (and sums several calls if it wishes).
void grad_norm_squared(const bf16* grads, size_t count, float* result_device, float* scratch, cudaStream_t stream);
void grad_norm_squared(const float* grads, size_t count, float* result_device, float* scratch, cudaStream_t stream);

}  // namespace moetune::cuda
