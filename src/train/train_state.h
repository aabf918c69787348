// Why: a run that stops (a crash, a pre-empted machine, Ctrl-C) must be able to continue as if it never had. A training
// checkpoint is therefore a Hugging Face model folder (fp32, so Transformers and `moetune eval` load any step as it is)
// plus what the weights do not say:
//   trainer_state.safetensors  the AdamW moments, fp32, one tensor per parameter and moment:
//                              "exp_avg.<name>" and "exp_avg_sq.<name>" with the parameter's shape (<name> as in
//                              ParamLayout); metadata {"format": "moetune-train-state", "step": "<N>"}
//   trainer_state.json         step, optimizer and schedule settings, micro-batch geometry, the data position
//                              (sampler epoch, position, seed, shuffle, dataset size), tokens and time so far, and the
//                              caller's own record (the CLI keeps its options there)
// The format is device-neutral: a GPU trainer with bf16 states widens them to fp32 when it saves.
//
// Atomicity: checkpoints/step-<N>/ is written as step-<N>.tmp-<pid>/, every file and the folder fsynced, then renamed
// (io/checkpoint_writer.h); so a folder named step-<N> is always complete, and a crash leaves at most a *.tmp-* folder
// (removed by the next save). Older checkpoints beyond keep_last go only after the new one is in place, renamed aside
// (*.old-<pid>) before they are deleted, so even an interrupted deletion never leaves a broken step-<N>.
//
// Several ranks (expert parallelism: each GPU holds its experts' weights and moments) write one checkpoint together,
// each its own values at their offsets, with no rank gathering the whole model (io/checkpoint_writer.h; the folder
// must then be on a filesystem every node sees); rank 0 writes trainer_state.json, renames and prunes. The result is
// the same folder, byte for byte, as one process writes, so any checkpoint resumes on any number of ranks. Resuming,
// each rank reads only what it holds of it (its experts and the replicated tensors: open_checkpoint, then
// read_checkpoint_values), so no rank holds the whole model then either.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "api/model.h"
#include "io/checkpoint_writer.h"
#include "io/streaming_loader.h"
#include "train/trainer.h"

namespace moetune {

// Where the data stream stands: BatchSampler::epoch()/position(), and the sampler settings and dataset size without
// which they mean nothing.
struct SamplerPosition {
  int64_t epoch = 0;
  size_t position = 0;
  uint64_t seed = 0;
  bool shuffle = true;
  size_t dataset_size = 0;  // samples of the dataset walked (a changed data file is caught when resuming)
};

// trainer_state.json: everything but the weights and the moments.
struct CheckpointRecord {
  long step = 0;                 // optimizer steps taken
  TrainOptions options;          // optimizer and schedule settings
  int batch_size = 0;            // sequences per micro-batch
  int seq_len = 0;               // tokens per sequence
  int grad_accum = 1;            // micro-batches per optimizer step
  SamplerPosition sampler;
  int64_t tokens_seen = 0;       // tokens trained on so far
  double elapsed_s = 0.0;        // training time so far
  nlohmann::json run = nlohmann::json::object();  // the caller's own record, stored as given
};

struct CheckpointWriteOptions {
  int keep_last = 3;  // checkpoints kept (the new one included); 0 keeps all
  // A model folder whose tokenizer and generation files are copied along (SaveOptions::copy_files_from); may be empty.
  // Writing a Model, empty means the model's source folder.
  std::string copy_files_from;
  // Called (on rank 0) after each file of the step folder is complete, with its name (tests pause here to interrupt a
  // save).
  std::function<void(const std::string& file)> after_file;
};

// Names of the step folder and its two state files.
std::string checkpoint_folder_name(long step);  // "step-<step>"
inline constexpr const char* kTrainStateTensors = "trainer_state.safetensors";
inline constexpr const char* kTrainStateJson = "trainer_state.json";

// Writes <checkpoints>/step-<state.step>/ (the model's weights in fp32, the moments, `record` with record.step set to
// state.step) atomically, then prunes: older checkpoints beyond keep_last, and any step-<M> with M > state.step (left
// by a timeline abandoned when an earlier checkpoint was resumed). Returns the new folder's path.
std::string write_checkpoint(const std::string& checkpoints, const Model& model, const TrainState& state,
                             CheckpointRecord record, const CheckpointWriteOptions& options = {});

// The same checkpoint of step `step` written by several ranks (io/checkpoint_writer.h; collective): every rank passes
// the values it writes of the weights and both moments (SourceArena::Params / ExpAvg / ExpAvgSq runs of the full layout of
// `config`; together they cover every parameter once), and the same record (rank 0's is written). Returns the new
// folder's path on every rank.
std::string write_checkpoint(const std::string& checkpoints, const ModelConfig& config,
                             const std::vector<HeldRun>& held, long step, CheckpointRecord record,
                             const CheckpointWriteOptions& options, const SaveRanks& ranks);

// The step folder `path` designates: a step folder itself (it holds trainer_state.json or config.json), a checkpoints
// folder (its highest step-<N>), or a run folder (the highest step-<N> of its checkpoints/). Throws Error naming
// `path` when there is none.
std::string resolve_checkpoint(const std::string& path);

// Reads and validates <step_folder>/trainer_state.json. Errors name the file and the field.
CheckpointRecord read_checkpoint_record(const std::string& step_folder);

// Reads <step_folder>/trainer_state.safetensors into a TrainState for `layout` (step from the file's metadata, which
// must equal `expected_step`). Errors name the file and the tensor: missing, unexpected, wrong dtype or shape.
TrainState read_train_state(const std::string& step_folder, const ParamLayout& layout, long expected_step);

// A checkpoint opened, before its values are read: the step folder, its config.json and record, and its tensor files
// (model*.safetensors, trainer_state.safetensors) mapped with every header validated in full against the config —
// errors name the file and the tensor: missing, unexpected, wrong shape or dtype, moments of another step — but no
// tensor data read. A run opens the checkpoint first (so a bad one fails before anything else happens), settles its
// options (resuming takes the checkpoint's) and its ranks' layout, then reads what each process holds
// (read_checkpoint_values). `path` as for resolve_checkpoint.
struct CheckpointFiles;  // the mapped, validated tensor files (train_state.cpp)
struct CheckpointInfo {
  std::string folder;  // the step folder
  ModelConfig config;  // the whole model's
  CheckpointRecord record;
  std::shared_ptr<const CheckpointFiles> files;  // reset to unmap them once the values are read
};
CheckpointInfo open_checkpoint(const std::string& path);

// The fp32 arenas a process holds of a checkpoint, in its own layout (ParamLayout(held).total_floats() elements each,
// alignment gaps zero).
struct CheckpointValues {
  std::vector<float> params;  // the weights
  TrainState state;           // the AdamW moments; step = the record's
};

// Reads the weights (model*.safetensors, either expert layout, one file or shards) and both moments
// (trainer_state.safetensors) of an opened checkpoint for `held`: checkpoint.config itself (everything), or an expert
// shard of it (parallel::expert_shard_config: its block of routed experts and every replicated tensor, what one rank
// of an expert-parallel run holds). Only the byte ranges of the held values are read, weights and moments in one
// multi-threaded streaming pass (io/streaming_loader.h), straight into the held layout: host memory is 12 bytes per
// held parameter (Qwen3-30B-A3B on 8 EP ranks: ~62 GB a rank instead of ~370 GB), never the full layout's.
// options: threads and progress (owns_expert is set from `held`); report (may be null): bytes and tensors read, time.
// Throws Error when `held` is not of the checkpoint's config.json, or checkpoint.files was reset.
CheckpointValues read_checkpoint_values(const CheckpointInfo& checkpoint, const ModelConfig& held,
                                        const LoadOptions& options = {}, LoadReport* report = nullptr);

// A whole checkpoint, validated against itself: the weights (from config.json + model.safetensors), the moments and the
// record. `path` as for resolve_checkpoint. open_checkpoint, then read_checkpoint_values of everything.
struct LoadedCheckpoint {
  std::string folder;  // the step folder
  Model model;
  TrainState state;
  CheckpointRecord record;
};
LoadedCheckpoint load_checkpoint(const std::string& path);

}  // namespace moetune
