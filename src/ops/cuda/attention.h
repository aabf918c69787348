// Why: fused (flash) attention forward and backward on the GPU through cuDNN's SDPA graphs (cuDNN frontend): causal,
// optional sliding window, grouped-query heads, bf16 in/out with fp32 softmax statistics saved for the backward pass.
// The CPU twin is ops/cpu/attention.h (same shapes and mask semantics).
//
// Packed rows (several documents per sequence, attention kept inside each document: the CPU twin's doc_start) use
// cuDNN's ragged (THD) layout instead of a mask: each document becomes one sequence of its own, found through per-
// sequence lengths and ragged offsets into the same (B, T, heads, D) buffers, so cost follows the documents' own
// lengths. Causal and window masks then apply per document, exactly the CPU twin's rule j >= doc_start[i].
// The graph's batch dimension is a number of document slots fixed when the graph is built, while the documents change
// every batch: prepare_packed() builds graphs for slot counts batch, 2 batch, 4 batch, ... up to max_docs, and each
// call runs the smallest that holds its documents (unused slots have length 0). So memory (workspace and the small
// offset arrays) is planned at start-up for max_docs, and the launch grid stays within 2x of the documents present.
// The unpacked graphs are untouched by all this.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

#include "ops/cpu/attention.h"
#include "ops/cuda/cuda_check.h"

namespace moetune::cuda {

// The documents of a packed batch, for one step (the same for every layer).
struct Documents {
  const int32_t* offsets;  // (count + 1) on the device: ops/cpu/document_offsets.h's offsets, uploaded
  int count;               // on the host: shape.batch <= count <= the max_docs given to prepare_packed
};

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

  // Packed rows. Builds the plans of every slot count for up to max_docs documents per batch (shape.batch <= max_docs
  // <= batch * seq_len; a packer that never emits documents shorter than L needs at most batch * ceil(seq_len / L))
  // and grows the workspace. Returns the workspace bytes. Must precede forward_packed / backward_packed of the shape.
  size_t prepare_packed(const cpu::AttentionShape& shape, int max_docs);

  // As forward / backward, each query seeing only keys of its own document. stats holds the same B * heads * T floats
  // as the unpacked stats but token-major, (B, T, heads): only backward_packed reads it. Launches one small kernel
  // (the documents' lengths and offsets) before the cuDNN graph; no host synchronisation.
  void forward_packed(bf16* out, float* stats, const bf16* q, const bf16* k, const bf16* v,
                      const cpu::AttentionShape& shape, const Documents& docs);
  void backward_packed(bf16* d_q, bf16* d_k, bf16* d_v, const bf16* d_out, const bf16* q, const bf16* k,
                       const bf16* v, const bf16* out, const float* stats, const cpu::AttentionShape& shape,
                       const Documents& docs);

 private:
  struct Plans;
  struct PackedPlans;
  using Key = std::tuple<int, int, int, int, int, int, float>;
  // Forward and backward graphs of a shape; slots > 0: the packed (ragged) graphs over that many document slots.
  static std::unique_ptr<Plans> make_plans(void* handle, const cpu::AttentionShape& shape, int slots);
  Plans& plans(const cpu::AttentionShape& shape);
  // Picks the smallest prepared slot count for docs and writes the ragged arrays for it (on the stream).
  Plans& packed_plans(const cpu::AttentionShape& shape, const Documents& docs);
  void ensure_workspace(size_t bytes);

  cudaStream_t stream_;
  void* handle_ = nullptr;  // cudnnHandle_t (kept opaque here so this header does not pull in cuDNN)
  std::map<Key, std::unique_ptr<Plans>> plans_;
  std::map<Key, std::unique_ptr<PackedPlans>> packed_;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  // Per-document lengths (slots) int32 and ragged offsets (slots + 1) int64 of Q/O, K/V and stats, for up to
  // ragged_slots_ slots; rewritten by every packed call (stream-ordered).
  void* ragged_ = nullptr;
  int ragged_slots_ = 0;
};

}  // namespace moetune::cuda
