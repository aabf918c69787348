// Why: a 30B MoE checkpoint is 60 GB in a dozen 5 GB shards, and loading it must run at the speed of the disk, not of
// one core converting bf16, and without first holding the file in memory. The loader maps every shard (no copies),
// validates all headers against config.json before a single byte of data is touched (so a bad checkpoint fails fast and
// leaves the destination unwritten), then lets a pool of threads convert tensors straight from the mapping into their
// place in the fused parameters — a per-expert tensor is one contiguous slice of a fused (E, 2I, H) / (E, H, I)
// parameter (model/hf_names.h), so "fusing on the fly" is just writing to the right offset. Consumed pages are dropped
// from the process (madvise DONTNEED), so resident memory stays at a few pieces in flight, not the size of the model.
//
// Where the converted values go is a TensorSink: the fp32 host arena today (HostF32Sink); a GPU sink can convert into a
// pinned staging buffer per worker and copy to the device, without the loader changing.
//
// Expert parallelism: LoadOptions::owns_expert selects the experts a rank holds; the others are never read (their pages
// are never touched, their destination slices are left as they were), in either expert layout.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "model/hf_names.h"

namespace moetune {

// Receives each piece of the checkpoint, already validated: `src` is a contiguous run of rows of a checkpoint tensor
// (src.name, dtype, the piece's shape, bytes in the file mapping, any alignment), `dest` the matching run of elements of
// the parameter buffer (dest.offset, dest.numel == src.numel(), same shape). write() is called concurrently from
// `workers` threads (worker in [0, workers)), never twice for overlapping destinations; one worker's calls never overlap.
class TensorSink {
 public:
  virtual ~TensorSink() = default;
  // Before the first write, on the loading thread.
  virtual void begin(int workers) {}
  virtual void write(const HfTensor& dest, const TensorEntry& src, int worker) = 0;
  // After the last write, on the loading thread (not called when the load fails).
  virtual void end() {}
};

// Converts into an fp32 buffer of layout.total_floats() elements (the host parameter arena).
class HostF32Sink final : public TensorSink {
 public:
  explicit HostF32Sink(float* params) : params_(params) {}
  void write(const HfTensor& dest, const TensorEntry& src, int worker) override;

 private:
  float* params_;
};

struct LoadOptions {
  // Experts this process holds; (layer, expert) -> true to load. Empty: every expert. Non-expert tensors (attention,
  // norms, routers, shared experts, embeddings) always load. Called on the loading thread only, while planning.
  std::function<bool(int layer, int expert)> owns_expert;
  int threads = 0;  // worker threads; 0 = default_load_threads()
  // A progress line (GB done / total, GB/s) and a final "loaded X GB in Y s (Z GB/s)" line on progress_out, once the
  // load has taken longer than progress_delay_s (small models stay silent).
  bool progress = true;
  double progress_delay_s = 1.0;
  std::FILE* progress_out = nullptr;  // nullptr = stderr
};

struct LoadReport {
  ExpertLayout expert_layout = ExpertLayout::PerExpert;  // the layout the checkpoint was found in
  uint64_t bytes_total = 0;  // checkpoint bytes of every tensor the config implies
  uint64_t bytes_read = 0;   // checkpoint bytes converted (== bytes_total without an owned-experts filter)
  size_t tensors_total = 0;  // checkpoint tensors the config implies
  size_t tensors_read = 0;   // of those, tensors read at least in part
  size_t shards = 0;         // safetensors files
  int threads = 0;           // worker threads used
  double seconds = 0;        // wall time, opening and validating included
  double gb_per_s() const { return seconds > 0 ? static_cast<double>(bytes_read) / 1e9 / seconds : 0.0; }
};

// Validates the checkpoint of `folder` against config/layout (errors as load_hf_weights documents them, thrown before
// any write to the sink), then streams every wanted tensor into `sink`. Either expert layout, any floating dtype.
// hf_reads then stream_tensors.
LoadReport stream_hf_weights(const std::string& folder, const ModelConfig& config, const ParamLayout& layout,
                             TensorSink& sink, const LoadOptions& options = {});

// One tensor to read: `src`, an entry of an opened safetensors file, already validated against `dest` (as many
// elements, a floating dtype), and `dest`, where its values go. The owned-experts filter reads the expert from
// dest.name (expert_of), so a destination named after a parameter ("exp_avg.model.layers.3.mlp.experts.down_proj")
// is filtered like the checkpoint tensor it mirrors.
struct TensorRead {
  HfTensor dest;
  const TensorEntry* src = nullptr;
};

// The tensors of the Hugging Face checkpoint `checkpoint` (opened from `folder`) that config/layout imply, matched with
// their destinations in `layout`, in the expert layout found (*found, may be null). Validates every header entry,
// read or not: errors as load_hf_weights documents them.
std::vector<TensorRead> hf_reads(const std::string& folder, const SafetensorsCheckpoint& checkpoint,
                                 const ModelConfig& config, const ParamLayout& layout, ExpertLayout* found = nullptr);

// Streams `reads` (entries of `files`, which stay open meanwhile) into `sink`: the threads, owned-experts filter and
// progress of `options`, pieces taken file by file in file order, consumed pages dropped. The loader behind
// stream_hf_weights, for callers that match other files themselves (a training checkpoint's weights and optimizer
// state in one pass, train/train_state.h). report.expert_layout is left at its default; report.seconds is the time of
// this call (opening and validating the files was the caller's).
LoadReport stream_tensors(const std::vector<const SafetensorsFile*>& files, const std::vector<TensorRead>& reads,
                          TensorSink& sink, const LoadOptions& options = {});

// min(8, hardware threads), at least 1.
int default_load_threads();

// The expert a checkpoint tensor name belongs to: "model.layers.3.mlp.experts.7.gate_proj.weight" -> {3, 7, false};
// fused "model.layers.3.mlp.experts.gate_up_proj" -> {3, -1, true} (all experts, dim 0); anything else -> {-1, -1, false}.
struct ExpertRef {
  int layer = -1;
  int expert = -1;
  bool fused = false;
  bool is_expert() const { return layer >= 0 && (expert >= 0 || fused); }
};
ExpertRef expert_of(const std::string& hf_name);

// "loading weights 12.34 / 56.78 GB (21%) | 3.45 GB/s" (GB = 1e9 bytes).
std::string format_load_progress(uint64_t bytes_done, uint64_t bytes_total, double seconds);
// "loaded 56.78 GB in 16.4 s (3.46 GB/s)".
std::string format_load_summary(uint64_t bytes, double seconds);

}  // namespace moetune
