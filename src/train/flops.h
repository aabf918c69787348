// Why: one definition of "model FLOPs" for every throughput figure moetune prints (bench, train), so TFLOP/s and MFU
// mean the same thing everywhere and match the convention of the baseline figures (6 x active matmul parameters per
// token, plus causal attention).
#pragma once

#include "model/config.h"

namespace moetune {

// Training FLOPs per token (forward + backward = 3 x forward):
//   6 * (active matmul parameters: q/k/v/o projections, router, the k routed experts' gate/up/down, shared expert and
//        its gate, dense MLPs, LM head; the embedding lookup is not a matmul)
// + per layer 3 * 4 * heads*head_dim * keys_seen, where keys_seen is the mean number of keys a query attends to
//   ((T + 1) / 2 for causal attention, fewer with a sliding window): Q·K^T and P·V, 2 FLOPs per multiply-add.
double training_flops_per_token(const ModelConfig& config, int seq_len);

}  // namespace moetune
