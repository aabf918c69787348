// Why: every folder moetune saves — a Hugging Face model (io/hf_checkpoint.h), a training checkpoint
// (train/train_state.h) — goes through this one writer, whether one process holds every value or many ranks each hold a
// part. With expert parallelism a GPU holds only its experts; gathering them to one rank to write would need the whole
// fp32 model, and for a checkpoint both AdamW moments, in one host (~370 GB for a 30B model). Instead the folder is
// planned first, identically on every rank: the files, each safetensors file's bytes before its data (the length and
// header JSON, exactly what write_safetensors writes) and every tensor's byte offset. Then:
//   1. rank 0 makes the staging folder <target>.tmp-<its pid> and every safetensors file in it (head written, file
//      sized to its final length) and fsyncs them;                                                 -- the ranks agree
//   2. each rank writes the values it holds at their offsets (pwrite), converting fp32 to the file's dtype in bounded
//      pieces (one buffer, never a copy of a tensor), and fsyncs every file it wrote to;          -- the ranks agree
//   3. rank 0 writes the small files (the index, config.json, trainer_state.json), copies the tokenizer files, fsyncs
//      them and the folder, and renames it into place: a folder already at the target is moved aside first
//      (<target>.old-<pid>) and removed only once the new one is in; a hook may then prune (old checkpoints). -- agree
// So a folder with the final name is always complete, and a failure leaves at most *.tmp-* / *.old-* folders. Each
// agreement is a max over the ranks: a rank that fails still takes part, so the others learn of it and fail too rather
// than wait forever (only a rank that dies outright can leave the others waiting in the collective), and rank 0 removes
// the staging folder. The failing rank's error names the file; the others name the rank that failed. The single-process
// writers are this writer with one rank holding everything (every agreement is then immediate), so both write the same
// bytes, and the synchronisation is a callback: NCCL in the CLI, threads in the tests.
//
// Several machines: every rank opens the staging files by the same path, so the output folder must be on a filesystem
// that every node mounts (NFS, Lustre, GPFS, ...) and on which data one node wrote and fsynced is seen by the node that
// renames the folder; on node-local disks each node would write its part into a folder of its own.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/dtype.h"

namespace moetune {

// The fp32 arenas a folder's tensors come from, each in the full model's layout (ParamLayout offsets): the weights and
// the AdamW moments.
enum class SourceArena { Params, ExpAvg, ExpAvgSq };
inline constexpr int kSourceArenas = 3;

// A tensor to store: `numel` fp32 values of `arena` from offset `offset`, as `dtype` (F32, BF16 or F16) under `name`.
struct SourcedTensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  SourceArena arena = SourceArena::Params;
  size_t offset = 0, numel = 0;
};

// A planned tensor: its values and where its bytes start in its file.
struct PlannedTensor {
  SourceArena arena = SourceArena::Params;
  size_t offset = 0, numel = 0;
  DType dtype = DType::F32;
  uint64_t file_offset = 0;
};

// A safetensors file of the folder: `head` (what write_safetensors writes before the data) then its tensors back to
// back, `size` bytes in all.
struct PlannedFile {
  std::string name;  // in the folder
  std::string head;
  uint64_t size = 0;
  std::vector<PlannedTensor> tensors;
};

// The safetensors file of `tensors`, in that order, with `metadata` in its header. Errors name `name`.
PlannedFile plan_tensor_file(const std::string& name, const std::vector<SourcedTensor>& tensors,
                             const std::map<std::string, std::string>& metadata);

// Everything a folder holds.
struct FolderPlan {
  std::vector<PlannedFile> tensor_files;
  std::vector<std::pair<std::string, std::string>> text_files;  // (name, contents), written by rank 0 in this order
  std::string copy_from;                // a folder (may be empty) whose files named in copy_names, those that exist,
  std::vector<std::string> copy_names;  // rank 0 copies along
};

// Values a rank holds and writes: [offset, offset + count) of `arena` (full layout), at `data`.
struct HeldRun {
  SourceArena arena = SourceArena::Params;
  size_t offset = 0, count = 0;
  const float* data = nullptr;  // (count)
};

// The ranks of a save. max_over_ranks: collective over every rank of the save, returning the largest value any rank
// passed (a barrier that carries a number); empty for a save by one process.
struct SaveRanks {
  int rank = 0;  // rank 0 makes, completes and renames the folder
  std::function<int(int value)> max_over_ranks;
};

// What the caller adds to the steps above, on rank 0 only; `target` is the folder's absolute path. A hook that throws
// fails the save like any other error.
struct FolderHooks {
  std::function<void(const std::string& target)> before;  // before the staging folder is made (checks, clean-ups)
  std::function<void(const std::string& target)> after;   // once the folder is in place (pruning)
  std::function<void(const std::string& file)> after_file;  // after each file of the folder is complete (tests pause)
};

// Writes the folder `plan` describes at `target`, atomically (see the top of this file). Collective: every rank of
// `ranks` calls it, with the values it writes: one rank's runs must not overlap, and all the ranks' runs together must
// cover every planned tensor, each value once. Throws on every rank when any rank failed.
void write_folder(const std::string& target, const FolderPlan& plan, const std::vector<HeldRun>& held,
                  const SaveRanks& ranks, const FolderHooks& hooks = {});

}  // namespace moetune
