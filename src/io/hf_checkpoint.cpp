// Why: see hf_checkpoint.h.
#include "io/hf_checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "core/error.h"
#include "io/safetensors.h"

namespace moetune {

namespace fs = std::filesystem;

namespace {

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

void fsync_path(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

}  // namespace

ExpertLayout load_hf_weights(const std::string& folder, const ModelConfig& config, const ParamLayout& layout,
                             float* params) {
  const SafetensorsCheckpoint checkpoint = SafetensorsCheckpoint::open(folder);
  const ExpertLayout expert_layout = detect_layout(checkpoint, config, layout);
  std::set<std::string> expected;
  for (const HfTensor& tensor : hf_tensors(config, layout, expert_layout)) {
    expected.insert(tensor.name);
    const TensorEntry* entry = checkpoint.find(tensor.name);
    if (!entry) fail(folder, ": checkpoint is missing tensor ", tensor.name, " (expected shape ", shape_text(tensor.shape), ")");
    if (entry->shape != tensor.shape)
      fail(checkpoint.file_of(tensor.name), ": tensor ", tensor.name, " has shape ", shape_text(entry->shape),
           ", config.json implies ", shape_text(tensor.shape));
    if (!dtype_is_float(entry->dtype))
      fail(checkpoint.file_of(tensor.name), ": tensor ", tensor.name, " has dtype ", dtype_name(entry->dtype),
           ", expected a floating type (F32, BF16, F16)");
    read_as_f32(*entry, params + tensor.offset);
  }
  for (const std::string& name : checkpoint.names())
    if (!expected.count(name) && !ignorable(name, config))
      fail(checkpoint.file_of(name), ": unexpected tensor ", name, " (not part of a ", config.architecture,
           " with this config.json)");
  return expert_layout;
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
    const std::vector<HfTensor> tensors = hf_tensors(config, layout, options.expert_layout);
    std::vector<std::vector<unsigned char>> converted;
    std::vector<TensorToWrite> writes;
    converted.reserve(tensors.size());
    for (const HfTensor& tensor : tensors) {
      converted.emplace_back(tensor.numel * static_cast<size_t>(dtype_size(options.dtype)));
      convert_from_f32(options.dtype, params + tensor.offset, converted.back().data(), tensor.numel);
      writes.push_back({tensor.name, options.dtype, tensor.shape, converted.back().data(), converted.back().size()});
    }
    write_safetensors((staging / "model.safetensors").string(), writes, {{"format", "pt"}});

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
