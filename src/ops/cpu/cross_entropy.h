// Why: the causal-LM loss as Transformers' ForCausalLMLoss computes it: the label of position t is the token at t+1
// (the last position of each row has none), labels equal to -100 are ignored, and the loss is the mean over counted
// positions. Here the sum and the count are returned separately, so gradient accumulation can normalise by the tokens
// of all micro-batches.
#pragma once

#include <cstdint>

namespace moetune::cpu {

struct CrossEntropyResult {
  double loss_sum = 0.0;
  int64_t counted = 0;
};

// logits (B, T, V); labels (B, T) unshifted. probs_out (B, T, V) receives softmax(logits) for the backward pass.
CrossEntropyResult cross_entropy_forward(float* probs_out, const float* logits, const int32_t* labels, int batch,
                                         int seq_len, int vocab);

// d_logits (B, T, V) overwritten = scale * (probs - onehot(target)) at counted positions, 0 elsewhere.
void cross_entropy_backward(float* d_logits, const float* probs, const int32_t* labels, int batch, int seq_len, int vocab,
                            float scale);

}  // namespace moetune::cpu
