// Why: packed rows (several documents per sequence) are described to the CPU attention per token (doc_start, see
// ops/cpu/attention.h), but variable-length attention kernels such as cuDNN's ragged (THD) SDPA see the batch as a
// list of documents, each a contiguous run of tokens. This turns the first form into the second, once per batch on the
// host, and checks that doc_start really describes contiguous documents (the per-token form can express masks that a
// list of documents cannot).
#pragma once

#include <cstdint>
#include <vector>

namespace moetune::cpu {

// doc_start (batch, seq_len) as in ops/cpu/attention.h. Returns offsets (documents + 1): offsets[d] is the flattened
// token index (b * seq_len + t) where document d begins, ascending, offsets[0] = 0 and offsets.back() = batch * seq_len;
// every row start b * seq_len is one of them (a document never crosses rows). A token opens a new document iff
// doc_start[t] == t; every other token must continue its predecessor's document (doc_start[t] == doc_start[t - 1]),
// otherwise moetune::fail names the token. The tail of a row after its last sample (padding) is one more document,
// exactly as the CPU attention treats it.
std::vector<int32_t> document_offsets(const int32_t* doc_start, int batch, int seq_len);

}  // namespace moetune::cpu
