// Why: see flops.h.
#include "train/flops.h"

#include <algorithm>

namespace moetune {

double training_flops_per_token(const ModelConfig& c, int seq_len) {
  const double H = c.hidden_size, Q = c.q_width(), KV = c.kv_width();
  double active = static_cast<double>(c.vocab_size) * H;  // LM head
  double attention = 0.0;
  for (int l = 0; l < c.num_layers; ++l) {
    active += 2.0 * H * Q + 2.0 * H * KV;
    if (c.layer_is_sparse[l]) {
      active += c.num_experts * H + c.top_k * 3.0 * H * c.moe_intermediate_size;
      if (c.has_shared_expert()) active += 3.0 * H * c.shared_expert_intermediate_size + H;
    } else {
      active += 3.0 * H * c.dense_intermediate_size;
    }
    double keys_seen = 0.0;
    for (int i = 0; i < seq_len; ++i) keys_seen += c.sliding_window[l] > 0 ? std::min(i + 1, c.sliding_window[l]) : i + 1;
    attention += 3.0 * 4.0 * Q * keys_seen / seq_len;
  }
  return 6.0 * active + attention;
}

}  // namespace moetune
