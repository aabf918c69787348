// Why: see hf_checkpoint.h.
#include "io/hf_checkpoint.h"

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace moetune {

namespace fs = std::filesystem;

namespace {

// The files of the source folder a saved model takes along: tokenizer and generation settings.
const std::vector<std::string> kCopiedFiles = {"tokenizer.json", "tokenizer_config.json", "tokenizer.model",
                                                "special_tokens_map.json", "generation_config.json", "vocab.json",
                                                "merges.txt", "added_tokens.json", "chat_template.jinja"};

// Only a model folder (or an empty folder) is replaced; anything else at that path belongs to the user and stays.
void check_replaceable(const fs::path& target) {
  std::error_code error;
  if (!fs::exists(target, error)) return;
  if (!fs::is_directory(target, error)) fail(target.string(), ": exists and is not a folder (not replacing it)");
  if (!fs::is_empty(target, error) && !fs::exists(target / "config.json", error))
    fail(target.string(), ": folder exists and is not a model folder (no config.json); not replacing it");
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

FolderPlan plan_hf_checkpoint(const ModelConfig& config, const ParamLayout& layout, const SaveOptions& options) {
  if (options.dtype != DType::F32 && options.dtype != DType::BF16 && options.dtype != DType::F16)
    fail("cannot save in dtype ", dtype_name(options.dtype), " (use F32, BF16 or F16)");
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
  FolderPlan plan;
  nlohmann::json weight_map = nlohmann::json::object();
  for (size_t s = 0; s < shards.size(); ++s) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", s + 1, shards.size());
    const std::string file = shards.size() == 1 ? "model.safetensors" : name;
    std::vector<SourcedTensor> sourced;
    for (size_t index : shards[s]) {
      const HfTensor& tensor = tensors[index];
      sourced.push_back({tensor.name, options.dtype, tensor.shape, SourceArena::Params, tensor.offset, tensor.numel});
      weight_map[tensor.name] = file;
    }
    plan.tensor_files.push_back(plan_tensor_file(file, sourced, {{"format", "pt"}}));
  }
  if (shards.size() > 1) {
    // json.dumps(index, indent=2, sort_keys=True) + "\n", as save_pretrained writes it (nlohmann::json sorts keys).
    const nlohmann::json index = {
        {"metadata", {{"total_parameters", layout.parameter_count()}, {"total_size", total_size}}},
        {"weight_map", weight_map}};
    plan.text_files.emplace_back("model.safetensors.index.json", index.dump(2) + "\n");
  }
  nlohmann::json config_json = config.source;
  const char* dtype_text = options.dtype == DType::F32 ? "float32" : options.dtype == DType::BF16 ? "bfloat16" : "float16";
  config_json["dtype"] = dtype_text;
  config_json.erase("torch_dtype");
  plan.text_files.emplace_back("config.json", config_json.dump(2) + "\n");
  plan.copy_from = options.copy_files_from;
  plan.copy_names = kCopiedFiles;
  return plan;
}

void save_hf_checkpoint(const std::string& folder, const ModelConfig& config, const ParamLayout& layout,
                        const float* params, const SaveOptions& options) {
  save_hf_checkpoint(folder, config, {{SourceArena::Params, 0, layout.total_floats(), params}}, options, SaveRanks{});
}

void save_hf_checkpoint(const std::string& folder, const ModelConfig& config, const std::vector<HeldRun>& held,
                        const SaveOptions& options, const SaveRanks& ranks) {
  FolderHooks hooks;
  hooks.before = [](const std::string& target) { check_replaceable(target); };
  write_folder(folder, plan_hf_checkpoint(config, ParamLayout(config), options), held, ranks, hooks);
}

}  // namespace moetune
