// Why: Hugging Face checkpoints come as one model.safetensors or as shards listed by model.safetensors.index.json. The index
// and the shards are written separately and can disagree (a shard missing, a tensor in two shards, a stale weight_map), so
// every shard is opened and cross-checked against the index at open: later lookups can then trust the mapping.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "io/safetensors.h"

namespace moetune {

namespace fs = std::filesystem;

namespace {

template <class... Parts>
[[noreturn]] void fail_in_index(const std::string& index_path, Parts&&... parts) {
  fail("checkpoint index '", index_path, "': ", std::forward<Parts>(parts)...);
}

// weight_map of the index: tensor name -> shard file name (relative to the folder).
std::map<std::string, std::string> read_weight_map(const std::string& index_path) {
  std::ifstream in(index_path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  if (!in) fail_in_index(index_path, "cannot read the file");
  const nlohmann::ordered_json index = parse_json_strict(text.str(), str("checkpoint index '", index_path, "'"));
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
    fail_in_index(index_path, "must be a JSON object with a \"weight_map\" object");
  std::map<std::string, std::string> weight_map;
  for (const auto& [name, shard] : index["weight_map"].items()) {
    if (!shard.is_string() || shard.get<std::string>().empty())
      fail_in_index(index_path, "weight_map entry for tensor '", name, "' must be a non-empty file name");
    weight_map[name] = shard.get<std::string>();
  }
  return weight_map;
}

}  // namespace

SafetensorsCheckpoint SafetensorsCheckpoint::open(const std::string& folder) {
  std::error_code error;
  if (!fs::is_directory(folder, error)) fail("checkpoint folder '", folder, "' does not exist or is not a folder");
  SafetensorsCheckpoint checkpoint;
  checkpoint.folder_ = folder;
  const fs::path index_path = fs::path(folder) / "model.safetensors.index.json";
  const fs::path single_path = fs::path(folder) / "model.safetensors";
  if (fs::exists(index_path, error)) {
    checkpoint.open_sharded(index_path.string());
  } else if (fs::exists(single_path, error)) {
    checkpoint.add_file(SafetensorsFile::open(single_path.string()));
  } else {
    fail("checkpoint folder '", folder, "' holds neither model.safetensors nor model.safetensors.index.json");
  }
  return checkpoint;
}

void SafetensorsCheckpoint::open_sharded(const std::string& index_path) {
  // tensor -> shard path; normalized so that "a.safetensors" and "./a.safetensors" name one shard.
  std::map<std::string, std::string> weight_map = read_weight_map(index_path);
  for (auto& [name, shard] : weight_map) shard = (fs::path(folder_) / shard).lexically_normal().string();
  std::map<std::string, std::string> first_tensor_of_shard;  // shard path -> a tensor naming it, for the error message
  for (const auto& [name, shard] : weight_map) first_tensor_of_shard.emplace(shard, name);
  for (const auto& [shard, name] : first_tensor_of_shard) {
    std::error_code error;
    if (!fs::exists(shard, error))
      fail_in_index(index_path, "shard '", shard, "' (holding tensor '", name, "') does not exist");
    add_file(SafetensorsFile::open(shard));
  }
  for (const auto& [name, expected] : weight_map) {
    const auto it = tensors_.find(name);
    if (it == tensors_.end())
      fail_in_index(index_path, "tensor '", name, "' is mapped to shard '", expected, "', which does not hold it");
    if (files_[it->second.file].path() != expected)
      fail_in_index(index_path, "tensor '", name, "' is mapped to shard '", expected, "' but is in shard '",
                    files_[it->second.file].path(), "'");
  }
  for (const auto& [name, located] : tensors_) {
    if (!weight_map.count(name))
      fail_in_index(index_path, "tensor '", name, "' of shard '", files_[located.file].path(),
                    "' is missing from the weight_map");
  }
}

void SafetensorsCheckpoint::add_file(SafetensorsFile file) {
  const size_t position = files_.size();
  files_.push_back(std::move(file));
  // Entries live in the file's tensor vector, whose buffer stays put when files_ grows (moving a vector keeps its buffer).
  for (const TensorEntry& entry : files_.back().tensors()) {
    const auto [it, inserted] = tensors_.emplace(entry.name, Located{&entry, position});
    if (!inserted)
      fail("checkpoint folder '", folder_, "': tensor '", entry.name, "' is in two shards: '",
           files_[it->second.file].path(), "' and '", files_.back().path(), "'");
  }
}

const TensorEntry* SafetensorsCheckpoint::find(const std::string& name) const {
  const auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : it->second.entry;
}

std::vector<std::string> SafetensorsCheckpoint::names() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const auto& [name, located] : tensors_) names.push_back(name);
  std::sort(names.begin(), names.end());
  return names;
}

const std::string& SafetensorsCheckpoint::file_of(const std::string& name) const {
  const auto it = tensors_.find(name);
  if (it == tensors_.end()) fail("checkpoint folder '", folder_, "' has no tensor '", name, "'");
  return files_[it->second.file].path();
}

}  // namespace moetune
