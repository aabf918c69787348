// Why: the GPU twin of ops/cpu/adamw.h: PyTorch's torch.optim.AdamW (single-tensor path) over one flat parameter
// buffer, and the global gradient norm used for clipping. The flat buffer is described by spans (one per parameter
// tensor, or per group of tensors sharing the decay setting), so one launch updates every parameter:
//   g = grad_scale * grad                 (the clipping factor, or 1)
//   p *= 1 - lr * wd                      (only in spans with decay)
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// The element arithmetic is fp32 in the CPU twin's order with every operation rounded separately (no fused multiply-
// add), so with fp32 states it reproduces the CPU twin bit for bit. Elements outside every span are left untouched.
#pragma once

#include <cstddef>

#include "ops/cpu/adamw.h"
#include "ops/cuda/cuda_check.h"

namespace moetune::cuda {

using AdamWHyper = cpu::AdamWHyper;  // lr, beta1, beta2, eps, weight_decay, step (1-based, after this update)

// Elements [offset, offset + count) of the flat buffers. A span list is sorted by offset and its spans are disjoint.
struct AdamWSpan {
  size_t offset, count;
  bool decay;  // apply weight decay in this span (matrices: yes; norms, biases, embeddings: per the recipe)
};

// All-bf16 variant: params, m, v (total) bf16, read to fp32, updated, rounded back (round-to-nearest).
// grads (total) bf16. spans_device: span_count AdamWSpans in device memory.
// All buffers must start 16-byte aligned (as cudaMalloc returns them): the kernels move 8 elements per access.
void adamw_bf16(bf16* params, const bf16* grads, bf16* m, bf16* v, const AdamWSpan* spans_device, int span_count,
                size_t total, AdamWHyper h, float grad_scale, cudaStream_t stream);

// fp32-master variant: master, m, v (total) fp32 are the optimizer's state; params (total) bf16 receives the rounded
// updated master (the copy the forward pass reads). grads (total) bf16.
void adamw_master(bf16* params, float* master, const bf16* grads, float* m, float* v, const AdamWSpan* spans_device,
                  int span_count, size_t total, AdamWHyper h, float grad_scale, cudaStream_t stream);

// Floats of scratch grad_norm_squared needs (a fixed number, independent of count and of the device).
size_t grad_norm_scratch_floats();

// *result_device (one float, overwritten) = sum of g^2 over grads (count), in fp32: a fixed grid of
// grad_norm_scratch_floats() blocks writes one partial sum each into scratch, then one block adds them in a fixed
// order, so the result is deterministic. The caller takes the square root (and sums several calls if it wishes).
void grad_norm_squared(const bf16* grads, size_t count, float* result_device, float* scratch, cudaStream_t stream);
void grad_norm_squared(const float* grads, size_t count, float* result_device, float* scratch, cudaStream_t stream);

}  // namespace moetune::cuda
