// Why: see hf_checkpoint.h.
#include "io/hf_checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/safetensors.h"

namespace moetune {

namespace fs = std::filesystem;

namespace {

void fsync_path(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

// The weight files of a checkpoint: model.safetensors, or shards and their index when the tensors exceed
// options.max_shard_bytes. Each tensor is converted piece by piece as it is written.
void write_weights(const fs::path& staging, const ModelConfig& config, const ParamLayout& layout, const float* params,
                   const SaveOptions& options) {
  const std::vector<HfTensor> tensors = hf_tensors(config, layout, options.expert_layout);
  const size_t element = static_cast<size_t>(dtype_size(options.dtype));
  std::vector<uint64_t> bytes;
  uint64_t total_size = 0;
  for (const HfTensor& tensor : tensors) {
    bytes.push_back(tensor.numel * element);
    total_size += bytes.back();
  }
  std::vector<std::vector<size_t>> shards = plan_shards(bytes, options.max_shard_bytes);
  if (shards.empty()) shards.emplace_back();  // no tensors at all: still one (empty) model.safetensors
  nlohmann::json weight_map = nlohmann::json::object();
  for (size_t s = 0; s < shards.size(); ++s) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", s + 1, shards.size());
    const std::string file = shards.size() == 1 ? "model.safetensors" : name;
    std::vector<TensorToWrite> writes;
    for (size_t index : shards[s]) {
      writes.push_back({tensors[index].name, options.dtype, tensors[index].shape, nullptr, bytes[index]});
      weight_map[tensors[index].name] = file;
    }
    write_safetensors_streaming((staging / file).string(), writes, {{"format", "pt"}},
                                [&](size_t i, size_t byte_offset, size_t nbytes, unsigned char* dst) {
                                  const HfTensor& tensor = tensors[shards[s][i]];
                                  convert_from_f32(options.dtype, params + tensor.offset + byte_offset / element, dst,
                                                   nbytes / element);
                                });
  }
  if (shards.size() <= 1) return;
  // json.dumps(index, indent=2, sort_keys=True) + "\n", as save_pretrained writes it (nlohmann::json sorts keys).
  const nlohmann::json index = {
      {"metadata", {{"total_parameters", layout.parameter_count()}, {"total_size", total_size}}},
      {"weight_map", weight_map}};
  const fs::path index_path = staging / "model.safetensors.index.json";
  {
    std::ofstream out(index_path);
    out << index.dump(2) << "\n";
    if (!out) fail(index_path.string(), ": write failed");
  }
  fsync_path(index_path);
}

}  // namespace

ExpertLayout load_hf_weights(const std::string& folder, const ModelConfig& config, const ParamLayout& layout,
                             float* params, const LoadOptions& options, LoadReport* report) {
  HostF32Sink sink(params);
  const LoadReport result = stream_hf_weights(folder, config, layout, sink, options);
  if (report) *report = result;
  return result.expert_layout;
}

std::vector<std::vector<size_t>> plan_shards(const std::vector<uint64_t>& tensor_bytes, uint64_t max_shard_bytes) {
  std::vector<std::vector<size_t>> shards;
  std::vector<size_t> current;
  uint64_t current_bytes = 0;
  for (size_t i = 0; i < tensor_bytes.size(); ++i) {
    if (tensor_bytes[i] > max_shard_bytes) {
      shards.push_back({i});
      continue;
    }
    if (current_bytes + tensor_bytes[i] > max_shard_bytes) {
      shards.push_back(std::move(current));
      current.clear();
      current_bytes = 0;
    }
    current.push_back(i);
    current_bytes += tensor_bytes[i];
  }
  if (!current.empty()) shards.push_back(std::move(current));
  return shards;
}

void save_hf_checkpoint(const std::string& folder, const ModelConfig& config, const ParamLayout& layout,
                        const float* params, const SaveOptions& options) {
  if (options.dtype != DType::F32 && options.dtype != DType::BF16 && options.dtype != DType::F16)
    fail("cannot save in dtype ", dtype_name(options.dtype), " (use F32, BF16 or F16)");
  fs::path target = fs::absolute(fs::path(folder)).lexically_normal();
  if (!target.has_filename()) target = target.parent_path();  // "out/final/": the folder is "final", not ""
  const fs::path parent = target.parent_path();
  std::error_code error;
  // Only a model folder (or an empty folder) is replaced; anything else at that path belongs to the user and stays.
  if (fs::exists(target, error)) {
    if (!fs::is_directory(target, error)) fail(target.string(), ": exists and is not a folder (not replacing it)");
    if (!fs::is_empty(target, error) && !fs::exists(target / "config.json", error))
      fail(target.string(), ": folder exists and is not a model folder (no config.json); not replacing it");
  }
  fs::create_directories(parent, error);
  if (error) fail(parent.string(), ": cannot create output folder: ", error.message());
  const fs::path staging = parent / (target.filename().string() + ".tmp-" + std::to_string(::getpid()));
  fs::remove_all(staging, error);
  if (!fs::create_directory(staging, error) || error)
    fail(staging.string(), ": cannot create folder (is ", parent.string(), " writable?): ", error.message());

  try {
    write_weights(staging, config, layout, params, options);

    nlohmann::json config_json = config.source;
    const char* dtype_text = options.dtype == DType::F32 ? "float32" : options.dtype == DType::BF16 ? "bfloat16" : "float16";
    config_json["dtype"] = dtype_text;
    config_json.erase("torch_dtype");
    {
      std::ofstream out(staging / "config.json");
      out << config_json.dump(2) << "\n";
      if (!out) fail((staging / "config.json").string(), ": write failed");
    }
    fsync_path(staging / "config.json");

    if (!options.copy_files_from.empty()) {
      for (const char* name : {"tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
                               "generation_config.json", "vocab.json", "merges.txt", "added_tokens.json",
                               "chat_template.jinja"}) {
        const fs::path source = fs::path(options.copy_files_from) / name;
        if (!fs::exists(source)) continue;
        fs::copy_file(source, staging / name, fs::copy_options::overwrite_existing, error);
        if (error) fail(source.string(), ": cannot copy into the checkpoint: ", error.message());
        fsync_path(staging / name);
      }
    }
    fsync_path(staging);

    // Swap into place: the old folder (if any) is moved aside first and removed only after the rename succeeded.
    const fs::path previous = parent / (target.filename().string() + ".old-" + std::to_string(::getpid()));
    const bool had_previous = fs::exists(target);
    if (had_previous) {
      fs::rename(target, previous, error);
      if (error) fail(target.string(), ": cannot move the previous checkpoint aside: ", error.message());
    }
    fs::rename(staging, target, error);
    if (error) {
      if (had_previous) fs::rename(previous, target);
      fail(target.string(), ": cannot move the new checkpoint into place: ", error.message());
    }
    fsync_path(parent);
    if (had_previous) fs::remove_all(previous, error);
  } catch (...) {
    fs::remove_all(staging, error);
    throw;
  }
}

}  // namespace moetune
