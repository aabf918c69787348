// Why: see document_offsets.h.
#include "ops/cpu/document_offsets.h"

#include "core/error.h"

namespace moetune::cpu {

std::vector<int32_t> document_offsets(const int32_t* doc_start, int batch, int seq_len) {
  if (batch <= 0 || seq_len <= 0) fail("document offsets of a ", batch, "x", seq_len, " batch");
  if (static_cast<int64_t>(batch) * seq_len > INT32_MAX)
    fail("document offsets: ", batch, "x", seq_len, " tokens do not fit 32-bit offsets");
  std::vector<int32_t> offsets;
  for (int b = 0; b < batch; ++b) {
    const int32_t* row = doc_start + static_cast<int64_t>(b) * seq_len;
    for (int t = 0; t < seq_len; ++t) {
      const bool opens = row[t] == t;
      if (!opens && (t == 0 || row[t] != row[t - 1]))
        fail("packed batch: token ", t, " of row ", b, " has doc_start ", row[t],
             t == 0 ? " (the first token of a row must start a document)"
                    : str(" but its predecessor's document starts at ", row[t - 1], " (documents must be contiguous)"));
      if (opens) offsets.push_back(b * seq_len + t);
    }
  }
  offsets.push_back(batch * seq_len);
  return offsets;
}

}  // namespace moetune::cpu
