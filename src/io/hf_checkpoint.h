// Why: moetune reads and writes Hugging Face model folders directly — no conversion step. Loading accepts either expert
// layout and any floating dtype, and checks that the checkpoint holds exactly the tensors the config implies, each with
// the right shape; it streams (io/streaming_loader.h): shards are mapped, read by several threads and converted in place.
// Saving writes Transformers' per-expert layout (what save_pretrained writes) or the fused one, sharded exactly as
// save_pretrained shards (model-00001-of-0000N.safetensors + model.safetensors.index.json past max_shard_bytes), plus
// config.json and the tokenizer files of the source folder, atomically: into a temporary folder that is renamed into
// place only when complete. Tensors are converted one piece at a time while writing, never as a copy of the model. The
// folder is planned (plan_hf_checkpoint) and written by io/checkpoint_writer.h, by one process holding the whole
// parameter arena or cooperatively by several ranks each holding a part (a GPU's experts), with the same bytes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "io/checkpoint_writer.h"
#include "io/streaming_loader.h"
#include "model/hf_names.h"

namespace moetune {

// Fills params (layout.total_floats() fp32 values) from the safetensors of `folder`. Throws Error naming the file and
// tensor on: a missing tensor, an unexpected one, a wrong shape, a non-floating dtype.
// Returns the expert layout found. `options` (threads, owned experts, progress) and `report` (bytes and tensors read,
// seconds; may be null) as in streaming_loader.h; with an owned-experts filter, the slices of other experts are left as
// they were.
ExpertLayout load_hf_weights(const std::string& folder, const ModelConfig& config, const ParamLayout& layout,
                             float* params, const LoadOptions& options = {}, LoadReport* report = nullptr);

struct SaveOptions {
  ExpertLayout expert_layout = ExpertLayout::PerExpert;
  DType dtype = DType::F32;          // F32, BF16 or F16
  std::string copy_files_from;       // a model folder whose tokenizer/generation files are copied along (may be empty)
  // save_pretrained's max_shard_size="5GB" (10^9 bytes a GB): above it, shards + index; a tensor larger than it gets a
  // shard of its own.
  uint64_t max_shard_bytes = 5'000'000'000;
};

// Hugging Face's shard assignment (huggingface_hub split_state_dict_into_shards_factory): tensors in order fill the
// current shard until the next would overflow it; a tensor larger than max_shard_bytes goes into a shard of its own,
// numbered before the shard being filled. Returns, per shard in file order, the tensor indices it holds.
std::vector<std::vector<size_t>> plan_shards(const std::vector<uint64_t>& tensor_bytes, uint64_t max_shard_bytes);

// The folder save_hf_checkpoint writes: the weight files (tensors of SourceArena::Params, full layout), then the index (when
// sharded) and config.json, and the files to copy from options.copy_files_from. Throws for a dtype other than F32/BF16/F16.
FolderPlan plan_hf_checkpoint(const ModelConfig& config, const ParamLayout& layout, const SaveOptions& options);

// Writes config.json + model.safetensors, or model-0000i-of-0000N.safetensors + model.safetensors.index.json
// ({"metadata": {"total_parameters", "total_size"}, "weight_map"}, as save_pretrained writes it) (+ copied files)
// into `folder`, atomically. Only a model folder (with config.json) or an empty folder at that path is replaced.
void save_hf_checkpoint(const std::string& folder, const ModelConfig& config, const ParamLayout& layout,
                        const float* params, const SaveOptions& options);

// The same folder written by several ranks (io/checkpoint_writer.h): every rank calls it with the parameter values it
// writes (SourceArena::Params runs of the full layout of `config`); together they cover every parameter once.
void save_hf_checkpoint(const std::string& folder, const ModelConfig& config, const std::vector<HeldRun>& held,
                        const SaveOptions& options, const SaveRanks& ranks);

}  // namespace moetune
