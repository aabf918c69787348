// Why: see embedding.h.
#include "ops/cpu/embedding.h"

#include <cstring>

namespace moetune::cpu {

void embedding_forward(float* out, const int32_t* ids, const float* table, int tokens, int hidden) {
  for (long t = 0; t < tokens; ++t) std::memcpy(out + t * hidden, table + static_cast<long>(ids[t]) * hidden, sizeof(float) * hidden);
}

void embedding_backward(float* d_table, const float* d_out, const int32_t* ids, int tokens, int hidden, int padding_idx) {
  for (long t = 0; t < tokens; ++t) {
    if (ids[t] == padding_idx) continue;
    float* row = d_table + static_cast<long>(ids[t]) * hidden;
    for (int h = 0; h < hidden; ++h) row[h] += d_out[t * hidden + h];
  }
}

}  // namespace moetune::cpu
