// Why: see checkpoint_writer.h.
#include "io/checkpoint_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <exception>
#include <filesystem>
#include <string>

#include "core/error.h"
#include "io/file_io.h"
#include "io/safetensors.h"

namespace moetune {

namespace fs = std::filesystem;

namespace {

// fp32 values converted and written per pwrite: 8M (a 16 MB buffer for bf16; f32 goes straight from the arena).
constexpr size_t kPieceValues = size_t{8} << 20;

const char* arena_name(SourceArena arena) {
  return arena == SourceArena::Params ? "the weights" : arena == SourceArena::ExpAvg ? "exp_avg" : "exp_avg_sq";
}

// Step 1, rank 0: the file with its head, sized to its final length (the data reads as zeros until the ranks fill it).
void create_tensor_file(const std::string& path, const PlannedFile& file) {
  FdGuard out{::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644)};
  if (out.fd < 0) fail("cannot create '", path, "': ", std::strerror(errno));
  write_all(out.fd, path, file.head.data(), file.head.size());
  if (::ftruncate(out.fd, static_cast<off_t>(file.size)) != 0)
    fail("cannot size '", path, "' to ", file.size, " bytes: ", std::strerror(errno));
  sync_and_close(out, path);
}

// This rank's runs of each arena, by offset. Overlapping runs are an error (a value would be written twice).
std::array<std::vector<HeldRun>, kSourceArenas> runs_by_arena(const std::vector<HeldRun>& held) {
  std::array<std::vector<HeldRun>, kSourceArenas> by_arena;
  for (const HeldRun& run : held) {
    if (run.count == 0) continue;
    if (run.data == nullptr) fail("saving: values [", run.offset, ", ", run.offset + run.count, ") of ",
                                  arena_name(run.arena), " have no data");
    by_arena[static_cast<size_t>(run.arena)].push_back(run);
  }
  for (std::vector<HeldRun>& runs : by_arena) {
    std::sort(runs.begin(), runs.end(), [](const HeldRun& a, const HeldRun& b) { return a.offset < b.offset; });
    for (size_t i = 1; i < runs.size(); ++i)
      if (runs[i - 1].offset + runs[i - 1].count > runs[i].offset)
        fail("saving: this rank's values [", runs[i - 1].offset, ", ", runs[i - 1].offset + runs[i - 1].count,
             ") and [", runs[i].offset, ", ", runs[i].offset + runs[i].count, ") of ", arena_name(runs[i].arena),
             " overlap");
  }
  return by_arena;
}

// Values [first, first + count) of `tensor`, read from `src`, converted to its dtype a piece at a time.
void write_values(int fd, const std::string& path, const PlannedTensor& tensor, const float* src, size_t first,
                  size_t count, std::vector<unsigned char>& buffer) {
  const size_t element = static_cast<size_t>(dtype_size(tensor.dtype));
  for (size_t done = 0; done < count; done += kPieceValues) {
    const size_t piece = std::min(kPieceValues, count - done);
    const uint64_t at = tensor.file_offset + (first + done) * element;
    if (tensor.dtype == DType::F32) {
      pwrite_all(fd, path, src + done, piece * element, at);
      continue;
    }
    buffer.resize(std::max(buffer.size(), piece * element));
    convert_from_f32(tensor.dtype, src + done, buffer.data(), piece);
    pwrite_all(fd, path, buffer.data(), piece * element, at);
  }
}

// Step 2, every rank: the planned tensors' values this rank holds, file by file in offset order; each file written to
// is fsynced.
void write_held_values(const fs::path& staging, const FolderPlan& plan, const std::vector<HeldRun>& held) {
  const std::array<std::vector<HeldRun>, kSourceArenas> by_arena = runs_by_arena(held);
  std::vector<unsigned char> buffer;
  for (const PlannedFile& file : plan.tensor_files) {
    const std::string path = (staging / file.name).string();
    FdGuard out;
    for (const PlannedTensor& tensor : file.tensors) {
      const std::vector<HeldRun>& runs = by_arena[static_cast<size_t>(tensor.arena)];
      const size_t end = tensor.offset + tensor.numel;
      // The first run ending after the tensor's start, then each one starting before its end.
      auto run = std::upper_bound(runs.begin(), runs.end(), tensor.offset,
                                  [](size_t offset, const HeldRun& r) { return offset < r.offset + r.count; });
      for (; run != runs.end() && run->offset < end; ++run) {
        if (out.fd < 0) {
          out.fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
          if (out.fd < 0) fail("cannot open '", path, "' to write this rank's tensors: ", std::strerror(errno));
        }
        const size_t begin = std::max(tensor.offset, run->offset), stop = std::min(end, run->offset + run->count);
        write_values(out.fd, path, tensor, run->data + (begin - run->offset), begin - tensor.offset, stop - begin,
                     buffer);
      }
    }
    if (out.fd < 0) continue;
    sync_and_close(out, path);
  }
}

void write_text_file(const std::string& path, const std::string& text) {
  FdGuard out{::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)};
  if (out.fd < 0) fail("cannot create '", path, "': ", std::strerror(errno));
  write_all(out.fd, path, text.data(), text.size());
  sync_and_close(out, path);
}

// Step 3, rank 0: the small files and the copies, then the folder swapped into place.
void complete_and_rename(const fs::path& staging, const fs::path& target, const FolderPlan& plan,
                         const FolderHooks& hooks) {
  const auto after_file = [&](const std::string& name) {
    if (hooks.after_file) hooks.after_file(name);
  };
  for (const PlannedFile& file : plan.tensor_files) after_file(file.name);
  for (const auto& [name, text] : plan.text_files) {
    write_text_file((staging / name).string(), text);
    after_file(name);
  }
  std::error_code error;
  if (!plan.copy_from.empty())
    for (const std::string& name : plan.copy_names) {
      const fs::path source = fs::path(plan.copy_from) / name;
      if (!fs::exists(source, error)) continue;
      fs::copy_file(source, staging / name, fs::copy_options::overwrite_existing, error);
      if (error) fail(source.string(), ": cannot copy into the checkpoint: ", error.message());
      fsync_path((staging / name).string());
      after_file(name);
    }
  fsync_path(staging.string());

  // A folder already at the target is moved aside first and removed only once the new one is in.
  const fs::path parent = target.parent_path();
  const fs::path previous = parent / (target.filename().string() + ".old-" + std::to_string(::getpid()));
  const bool had_previous = fs::exists(target, error);
  if (had_previous) {
    fs::remove_all(previous, error);
    fs::rename(target, previous, error);
    if (error) fail(target.string(), ": cannot move the previous checkpoint aside: ", error.message());
  }
  fs::rename(staging, target, error);
  if (error) {
    std::error_code ignored;
    if (had_previous) fs::rename(previous, target, ignored);
    fail(target.string(), ": cannot move the new checkpoint into place: ", error.message());
  }
  fsync_path(parent.string());
  if (had_previous) fs::remove_all(previous, error);
  if (hooks.after) hooks.after(target.string());
}

}  // namespace

PlannedFile plan_tensor_file(const std::string& name, const std::vector<SourcedTensor>& tensors,
                             const std::map<std::string, std::string>& metadata) {
  std::vector<TensorToWrite> entries;
  entries.reserve(tensors.size());
  for (const SourcedTensor& tensor : tensors) {
    if (!dtype_is_float(tensor.dtype))
      fail("'", name, "': tensor '", tensor.name, "': cannot store fp32 values as ", dtype_name(tensor.dtype));
    entries.push_back({tensor.name, tensor.dtype, tensor.shape, nullptr,
                       tensor.numel * static_cast<size_t>(dtype_size(tensor.dtype))});
  }
  PlannedFile file;
  file.name = name;
  file.head = safetensors_head(name, entries, metadata);  // validates names and shapes against the byte counts
  file.size = file.head.size();
  for (size_t i = 0; i < tensors.size(); ++i) {
    file.tensors.push_back({tensors[i].arena, tensors[i].offset, tensors[i].numel, tensors[i].dtype, file.size});
    file.size += entries[i].nbytes;
  }
  return file;
}

void write_folder(const std::string& target_path, const FolderPlan& plan, const std::vector<HeldRun>& held,
                  const SaveRanks& ranks, const FolderHooks& hooks) {
  fs::path target = fs::absolute(fs::path(target_path)).lexically_normal();
  if (!target.has_filename()) target = target.parent_path();  // "out/final/": the folder is "final", not ""
  const fs::path parent = target.parent_path();
  const bool root = ranks.rank == 0;
  const auto max_over_ranks = [&](int value) { return ranks.max_over_ranks ? ranks.max_over_ranks(value) : value; };
  const auto staging_of = [&](int pid) { return parent / (target.filename().string() + ".tmp-" + std::to_string(pid)); };

  std::exception_ptr failure;  // this rank's first error; later steps are skipped, the agreements still taken part in
  fs::path staging;            // rank 0: set before it is made, so that a failure removes it
  const auto attempt = [&](const std::function<void()>& step) {
    if (failure) return;
    try {
      step();
    } catch (...) {
      failure = std::current_exception();
    }
  };
  // Collective: when any rank failed, rank 0 removes the staging folder and every rank throws (the failed rank its own
  // error, the others one naming the highest rank that failed).
  const auto agree = [&] {
    const int failed_rank = max_over_ranks(failure ? ranks.rank + 1 : 0) - 1;
    if (failed_rank < 0) return;
    if (root && !staging.empty()) {
      std::error_code ignored;
      fs::remove_all(staging, ignored);
    }
    if (failure) std::rethrow_exception(failure);
    fail(target.string(), ": not saved: rank ", failed_rank, " failed while writing it (its own error names the cause)");
  };

  if (root)
    attempt([&] {
      if (hooks.before) hooks.before(target.string());
      std::error_code error;
      fs::create_directories(parent, error);
      if (error) fail(parent.string(), ": cannot create output folder: ", error.message());
      staging = staging_of(::getpid());
      fs::remove_all(staging, error);
      if (!fs::create_directory(staging, error) || error)
        fail(staging.string(), ": cannot create folder (is ", parent.string(), " writable?): ", error.message());
      for (const PlannedFile& file : plan.tensor_files) create_tensor_file((staging / file.name).string(), file);
    });
  agree();
  // The staging folder is named after rank 0's process; the other ranks learn its id here.
  const int root_pid = max_over_ranks(root ? static_cast<int>(::getpid()) : 0);

  attempt([&] { write_held_values(staging_of(root_pid), plan, held); });
  agree();

  if (root) attempt([&] { complete_and_rename(staging, target, plan, hooks); });
  agree();
}

}  // namespace moetune
