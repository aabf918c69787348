// Why: the GPU twin of ops/cpu/cross_entropy.h for the chunked LM-head loss: the logits of a chunk of rows are turned
// into their gradient in place right after the loss is read off them, so the (rows, V) fp32 probabilities of the CPU
// twin never exist. Targets arrive already shifted (the label of position t is the token at t+1; the caller writes -100
// for a row's last position), so a row here is one position. Sums of the per-row losses go through sum_floats, whose
// fixed reduction order keeps the loss bitwise reproducible.
#pragma once

#include <cstdint>

#include "ops/cuda/cuda_check.h"

namespace moetune::cuda {

// logits_inout (rows, V) bf16: logits in, d_logits out = grad_scale * (softmax(logits) - onehot(target)).
// row_loss (rows) fp32 overwritten: logsumexp(logits) - logits[target]. targets (rows): the shifted labels; a target
// of -100 (or any value outside [0, V)) marks an ignored row: loss 0 and an all-zero gradient row.
// Softmax statistics in fp32 (online max / sum of exp), one block per row; V up to at least 152k.
void cross_entropy_forward_backward(bf16* logits_inout, float* row_loss, const int32_t* targets, int rows, int vocab,
                                    float grad_scale, cudaStream_t stream);

// *result_device (overwritten) = sum of values (count), fp32, by one block in a fixed order (deterministic). Meant for
// short vectors (per-row losses of a step, per-chunk counts: up to ~1M values).
void sum_floats(const float* values, int count, float* result_device, cudaStream_t stream);

}  // namespace moetune::cuda
