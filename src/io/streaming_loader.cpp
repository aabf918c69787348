// Why: see streaming_loader.h. The load runs in four steps: open (map every shard, validate every header), match (each
// checkpoint tensor with its destination, shapes and dtypes checked: hf_reads; a training checkpoint's optimizer state
// is matched by train/train_state.cpp), plan (cut large tensors into pieces of at most kPieceBytes, drop experts this
// process does not own), stream (worker threads take pieces shard by shard in file order and hand them to the sink;
// the calling thread only reports progress). The last two are stream_tensors, whatever the files are.
#include "io/streaming_loader.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>

#include "core/error.h"

namespace moetune {

namespace {

using Clock = std::chrono::steady_clock;

// Pieces are at most this many checkpoint bytes: small enough that the pages in flight (threads x piece) stay a small
// fraction of a shard, large enough that madvise and scheduling cost nothing next to the copy.
constexpr size_t kPieceBytes = size_t{16} << 20;

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

// Tensors a checkpoint may carry that Transformers also ignores on load.
bool ignorable(const std::string& name, const ModelConfig& config) {
  const std::string suffix = "rotary_emb.inv_freq";
  if (name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) return true;
  return config.tie_word_embeddings && name == "lm_head.weight";
}

ExpertLayout detect_layout(const SafetensorsCheckpoint& checkpoint, const ModelConfig& config, const ParamLayout& layout) {
  for (const HfTensor& tensor : hf_tensors(config, layout, ExpertLayout::Fused))
    if (tensor.name.find("mlp.experts.gate_up_proj") != std::string::npos)
      return checkpoint.find(tensor.name) ? ExpertLayout::Fused : ExpertLayout::PerExpert;
  return ExpertLayout::PerExpert;
}

std::vector<const SafetensorsFile*> files_of(const SafetensorsCheckpoint& checkpoint) {
  std::vector<const SafetensorsFile*> files;
  for (const SafetensorsFile& file : checkpoint.files()) files.push_back(&file);
  return files;
}

// One unit of work: a run of rows of a checkpoint tensor and where it goes.
struct Piece {
  HfTensor dest;
  TensorEntry src;
};

// Rows [row, row + count) of dim 0 of (dest, src), as a piece of the same rank.
Piece rows_of(const HfTensor& dest, const TensorEntry& src, int64_t row, int64_t count) {
  const int64_t rows = src.shape[0];
  const size_t row_numel = dest.numel / static_cast<size_t>(rows);
  const size_t row_bytes = src.nbytes / static_cast<size_t>(rows);
  Piece piece{dest, src};
  piece.dest.shape[0] = piece.src.shape[0] = count;
  piece.dest.offset += static_cast<size_t>(row) * row_numel;
  piece.dest.numel = static_cast<size_t>(count) * row_numel;
  piece.src.data += static_cast<size_t>(row) * row_bytes;
  piece.src.nbytes = static_cast<size_t>(count) * row_bytes;
  return piece;
}

// Appends (dest, src) cut along dim 0 into pieces of at most kPieceBytes (a single row may be larger).
void add_pieces(const HfTensor& dest, const TensorEntry& src, std::vector<Piece>* out) {
  if (src.shape.empty() || src.shape[0] <= 1 || src.nbytes <= kPieceBytes) {
    out->push_back({dest, src});
    return;
  }
  const int64_t rows = src.shape[0];
  const size_t row_bytes = src.nbytes / static_cast<size_t>(rows);
  const int64_t per_piece = std::max<int64_t>(1, static_cast<int64_t>(kPieceBytes / std::max<size_t>(row_bytes, 1)));
  for (int64_t row = 0; row < rows; row += per_piece) out->push_back(rows_of(dest, src, row, std::min(per_piece, rows - row)));
}

// The part of a fused expert tensor (E, ...) that holds expert e, as a tensor of shape (...).
Piece expert_slice(const HfTensor& dest, const TensorEntry& src, int64_t e) {
  Piece piece = rows_of(dest, src, e, 1);
  piece.dest.shape.erase(piece.dest.shape.begin());
  piece.src.shape.erase(piece.src.shape.begin());
  return piece;
}

struct Plan {
  std::vector<std::vector<Piece>> by_shard;  // per file, in file order
  uint64_t bytes_total = 0;
  uint64_t bytes_read = 0;
  size_t tensors_total = 0;
  size_t tensors_read = 0;
};

// The pieces of `reads` this process reads (owns_expert), per file of `files`, each file's in file order.
Plan make_plan(const std::vector<const SafetensorsFile*>& files, const std::vector<TensorRead>& reads,
               const LoadOptions& options) {
  std::unordered_map<const TensorEntry*, size_t> shard_of;
  for (size_t f = 0; f < files.size(); ++f)
    for (const TensorEntry& entry : files[f]->tensors()) shard_of.emplace(&entry, f);

  Plan plan;
  plan.by_shard.resize(files.size());
  for (const TensorRead& read : reads) {
    const HfTensor& tensor = read.dest;
    const TensorEntry& entry = *read.src;
    const auto shard = shard_of.find(&entry);
    MT_ASSERT(shard != shard_of.end() && static_cast<size_t>(entry.numel()) == tensor.numel);
    plan.bytes_total += entry.nbytes;
    ++plan.tensors_total;

    std::vector<Piece>& pieces = plan.by_shard[shard->second];
    const ExpertRef ref = expert_of(tensor.name);
    if (!options.owns_expert || !ref.is_expert()) {
      add_pieces(tensor, entry, &pieces);
      plan.bytes_read += entry.nbytes;
      ++plan.tensors_read;
    } else if (!ref.fused) {
      if (!options.owns_expert(ref.layer, ref.expert)) continue;
      add_pieces(tensor, entry, &pieces);
      plan.bytes_read += entry.nbytes;
      ++plan.tensors_read;
    } else {
      bool any = false;
      for (int64_t e = 0; e < tensor.shape[0]; ++e) {
        if (!options.owns_expert(ref.layer, static_cast<int>(e))) continue;
        const Piece slice = expert_slice(tensor, entry, e);
        add_pieces(slice.dest, slice.src, &pieces);
        plan.bytes_read += slice.src.nbytes;
        any = true;
      }
      plan.tensors_read += any;
    }
  }
  for (std::vector<Piece>& pieces : plan.by_shard)
    std::sort(pieces.begin(), pieces.end(), [](const Piece& a, const Piece& b) { return a.src.data < b.src.data; });
  return plan;
}

// Hands out pieces: each worker starts on its own shard (worker w on shard w mod S) and reads it in file order; a worker
// whose shard is done moves to the shard with the most pieces left. Lock-free: one atomic cursor per shard.
class PieceQueue {
 public:
  explicit PieceQueue(const Plan& plan) : plan_(plan), next_(plan.by_shard.size()) {
    for (auto& cursor : next_) cursor.store(0, std::memory_order_relaxed);
  }
  // The next piece for a worker currently on shard *shard (updated when it moves); nullptr when all are taken.
  const Piece* take(size_t* shard) {
    const size_t shards = plan_.by_shard.size();
    for (;;) {
      if (*shard < shards) {
        const size_t index = next_[*shard].fetch_add(1, std::memory_order_relaxed);
        if (index < plan_.by_shard[*shard].size()) return &plan_.by_shard[*shard][index];
      }
      size_t best = shards, best_left = 0;
      for (size_t s = 0; s < shards; ++s) {
        const size_t taken = next_[s].load(std::memory_order_relaxed);
        const size_t left = taken < plan_.by_shard[s].size() ? plan_.by_shard[s].size() - taken : 0;
        if (left > best_left) best = s, best_left = left;
      }
      if (best == shards) return nullptr;
      *shard = best;
    }
  }

 private:
  const Plan& plan_;
  std::vector<std::atomic<size_t>> next_;
};

bool is_terminal(std::FILE* out) { return ::isatty(::fileno(out)) == 1; }

}  // namespace

void HostF32Sink::write(const HfTensor& dest, const TensorEntry& src, int /*worker*/) {
  MT_ASSERT(dest.numel == static_cast<size_t>(src.numel()));
  float* out = params_ + dest.offset;
  if (src.dtype != DType::BF16) {
    convert_to_f32(src.dtype, src.data, out, dest.numel);
    return;
  }
  // bf16 is what large checkpoints hold, and convert_to_f32's generic loop does not vectorise; this one does: copy a
  // block into an aligned buffer (the mapping is not 2-byte aligned in general), then widen.
  constexpr size_t kBlock = 4096;
  uint16_t block[kBlock];
  for (size_t at = 0; at < dest.numel; at += kBlock) {
    const size_t count = std::min(kBlock, dest.numel - at);
    std::memcpy(block, src.data + 2 * at, 2 * count);
    for (size_t i = 0; i < count; ++i) out[at + i] = std::bit_cast<float>(static_cast<uint32_t>(block[i]) << 16);
  }
}

int default_load_threads() {
  const unsigned hardware = std::thread::hardware_concurrency();
  return static_cast<int>(std::clamp(hardware, 1u, 8u));
}

ExpertRef expert_of(const std::string& hf_name) {
  ExpertRef ref;
  const size_t layers = hf_name.find("layers.");
  if (layers == std::string::npos) return ref;
  size_t at = layers + 7;
  auto read_int = [&](int* value) {
    const size_t begin = at;
    long long parsed = 0;
    while (at < hf_name.size() && hf_name[at] >= '0' && hf_name[at] <= '9' && at - begin < 9)
      parsed = parsed * 10 + (hf_name[at++] - '0');
    *value = static_cast<int>(parsed);
    return at > begin && at < hf_name.size() && hf_name[at] == '.';
  };
  int layer = 0;
  if (!read_int(&layer)) return ref;
  const size_t experts = hf_name.find(".experts.", at);
  if (experts == std::string::npos) return ref;
  at = experts + 9;
  int expert = 0;
  if (at < hf_name.size() && hf_name[at] >= '0' && hf_name[at] <= '9') {
    if (!read_int(&expert)) return ref;
    ref.layer = layer;
    ref.expert = expert;
  } else {
    ref.layer = layer;
    ref.fused = true;
  }
  return ref;
}

std::string format_load_progress(uint64_t bytes_done, uint64_t bytes_total, double seconds) {
  char text[128];
  const double done = static_cast<double>(bytes_done) / 1e9, total = static_cast<double>(bytes_total) / 1e9;
  const double percent = bytes_total > 0 ? 100.0 * static_cast<double>(bytes_done) / static_cast<double>(bytes_total) : 100.0;
  std::snprintf(text, sizeof text, "loading weights %.2f / %.2f GB (%.0f%%) | %.2f GB/s", done, total, percent,
                seconds > 0 ? done / seconds : 0.0);
  return text;
}

std::string format_load_summary(uint64_t bytes, double seconds) {
  char text[128];
  const double gb = static_cast<double>(bytes) / 1e9;
  std::snprintf(text, sizeof text, "loaded %.2f GB in %.1f s (%.2f GB/s)", gb, seconds, seconds > 0 ? gb / seconds : 0.0);
  return text;
}

std::vector<TensorRead> hf_reads(const std::string& folder, const SafetensorsCheckpoint& checkpoint,
                                 const ModelConfig& config, const ParamLayout& layout, ExpertLayout* found) {
  const ExpertLayout expert_layout = detect_layout(checkpoint, config, layout);
  if (found) *found = expert_layout;
  std::vector<TensorRead> reads;
  std::set<std::string> names;
  for (const HfTensor& tensor : hf_tensors(config, layout, expert_layout)) {
    names.insert(tensor.name);
    const TensorEntry* entry = checkpoint.find(tensor.name);
    if (!entry)
      fail(folder, ": checkpoint is missing tensor ", tensor.name, " (expected shape ", shape_text(tensor.shape), ")");
    if (entry->shape != tensor.shape)
      fail(checkpoint.file_of(tensor.name), ": tensor ", tensor.name, " has shape ", shape_text(entry->shape),
           ", config.json implies ", shape_text(tensor.shape));
    if (!dtype_is_float(entry->dtype))
      fail(checkpoint.file_of(tensor.name), ": tensor ", tensor.name, " has dtype ", dtype_name(entry->dtype),
           ", expected a floating type (F32, BF16, F16)");
    reads.push_back({tensor, entry});
  }
  for (const std::string& name : checkpoint.names())
    if (!names.count(name) && !ignorable(name, config))
      fail(checkpoint.file_of(name), ": unexpected tensor ", name, " (not part of a ", config.architecture,
           " with this config.json)");
  return reads;
}

namespace {

// stream_tensors, timed (the report, the progress lines) from `start`.
LoadReport stream_since(Clock::time_point start, const std::vector<const SafetensorsFile*>& files,
                        const std::vector<TensorRead>& reads, TensorSink& sink, const LoadOptions& options) {
  const auto elapsed = [&] { return std::chrono::duration<double>(Clock::now() - start).count(); };

  const Plan plan = make_plan(files, reads, options);
  LoadReport report;
  report.bytes_total = plan.bytes_total;
  report.bytes_read = plan.bytes_read;
  report.tensors_total = plan.tensors_total;
  report.tensors_read = plan.tensors_read;
  report.shards = files.size();

  size_t pieces = 0;
  for (const auto& shard : plan.by_shard) pieces += shard.size();
  const int wanted = options.threads > 0 ? options.threads : default_load_threads();
  const int workers = static_cast<int>(std::clamp<size_t>(pieces, 1, static_cast<size_t>(wanted)));
  report.threads = workers;

  // Whole files are read front to back unless a filter skips experts (then read-ahead would fetch what is not wanted).
  if (!options.owns_expert)
    for (const SafetensorsFile* file : files)
      advise_mapped(file->mapping(), file->mapping_size(), MapAdvice::Sequential);

  sink.begin(workers);
  PieceQueue queue(plan);
  std::atomic<uint64_t> bytes_done{0};
  std::atomic<bool> failed{false};
  std::exception_ptr first_error;
  std::mutex mutex;
  std::condition_variable finished;
  int running = workers;

  auto work = [&](int worker) {
    try {
      size_t shard = static_cast<size_t>(worker) % std::max<size_t>(plan.by_shard.size(), 1);
      while (!failed.load(std::memory_order_relaxed)) {
        const Piece* piece = queue.take(&shard);
        if (!piece) break;
        advise_mapped(piece->src.data, piece->src.nbytes, MapAdvice::WillNeed);
        sink.write(piece->dest, piece->src, worker);
        advise_mapped(piece->src.data, piece->src.nbytes, MapAdvice::DontNeed);
        bytes_done.fetch_add(piece->src.nbytes, std::memory_order_relaxed);
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex);
      if (!first_error) first_error = std::current_exception();
      failed.store(true);
    }
    std::lock_guard<std::mutex> lock(mutex);
    --running;
    finished.notify_all();
  };

  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(workers));
  try {
    for (int w = 0; w < workers; ++w) threads.emplace_back(work, w);
  } catch (...) {  // out of threads: stop the ones started, then report
    failed.store(true);
    for (std::thread& thread : threads) thread.join();
    throw;
  }

  std::FILE* out = options.progress_out ? options.progress_out : stderr;
  const bool in_place = options.progress && is_terminal(out);
  bool shown = false;
  double last_shown = -1e9;
  {
    std::unique_lock<std::mutex> lock(mutex);
    while (!finished.wait_for(lock, std::chrono::milliseconds(100), [&] { return running == 0; })) {
      const double now = elapsed();
      if (!options.progress || now < options.progress_delay_s || now - last_shown < (in_place ? 0.25 : 5.0)) continue;
      const std::string line = format_load_progress(bytes_done.load(), plan.bytes_read, now);
      if (in_place)
        std::fprintf(out, "\r%s\033[K", line.c_str());
      else
        std::fprintf(out, "%s\n", line.c_str());
      std::fflush(out);
      shown = true;
      last_shown = now;
    }
  }
  for (std::thread& thread : threads) thread.join();
  if (shown && in_place) std::fputs("\r\033[K", out);
  if (first_error) {
    if (shown) std::fflush(out);
    std::rethrow_exception(first_error);
  }
  sink.end();

  report.seconds = elapsed();
  if (options.progress && (shown || report.seconds >= options.progress_delay_s)) {
    std::fprintf(out, "%s\n", format_load_summary(report.bytes_read, report.seconds).c_str());
    std::fflush(out);
  }
  return report;
}

}  // namespace

LoadReport stream_hf_weights(const std::string& folder, const ModelConfig& config, const ParamLayout& layout,
                             TensorSink& sink, const LoadOptions& options) {
  const Clock::time_point start = Clock::now();  // the report's time includes opening and validating
  const SafetensorsCheckpoint checkpoint = SafetensorsCheckpoint::open(folder);
  ExpertLayout expert_layout = ExpertLayout::PerExpert;
  const std::vector<TensorRead> reads = hf_reads(folder, checkpoint, config, layout, &expert_layout);
  LoadReport report = stream_since(start, files_of(checkpoint), reads, sink, options);
  report.expert_layout = expert_layout;
  return report;
}

LoadReport stream_tensors(const std::vector<const SafetensorsFile*>& files, const std::vector<TensorRead>& reads,
                          TensorSink& sink, const LoadOptions& options) {
  return stream_since(Clock::now(), files, reads, sink, options);
}

}  // namespace moetune
