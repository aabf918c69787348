// Why: every checkpoint moetune reads or writes is safetensors. The reader maps files read-only and validates the whole header
// before anything touches the bytes, because a hostile or truncated file must end as one moetune::Error naming the file and
// the tensor, never as a crash or a silent misread. The writer goes through a temporary file and a rename, so a crash never
// leaves a half-written checkpoint under its final name.
//
// Format (https://github.com/huggingface/safetensors): u64 little-endian header length N, N bytes of JSON header
// {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ..., "__metadata__": {"k": "v"}}, then the data
// section; offsets are relative to the data section, which the tensors must cover exactly (no holes, no overlaps).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/dtype.h"

namespace moetune {

// One tensor of an opened file. `data` points into the file mapping (valid while the file is open) and is not aligned in
// general: read it with memcpy or convert_to_f32, never by casting to a wider type.
struct TensorEntry {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const unsigned char* data;
  size_t nbytes;  // == numel() * dtype_size(dtype), checked at open
  int64_t numel() const;
};

// One validated, memory-mapped safetensors file. Move-only; unmaps on destruction, so TensorEntry::data pointers die with it.
class SafetensorsFile {
 public:
  // Throws moetune::Error naming `path` (and the tensor, where one is at fault) for any malformed or truncated file.
  static SafetensorsFile open(const std::string& path);

  SafetensorsFile(SafetensorsFile&& other) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&& other) noexcept;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  const std::vector<TensorEntry>& tensors() const { return tensors_; }  // in header order
  const TensorEntry* find(const std::string& name) const;                // nullptr if absent
  const std::map<std::string, std::string>& metadata() const { return metadata_; }  // "__metadata__"
  // The whole mapping (header included) and its size, for madvise-style hints (see advise_mapped).
  const unsigned char* mapping() const { return static_cast<const unsigned char*>(map_); }
  size_t mapping_size() const { return map_size_; }

 private:
  SafetensorsFile() = default;
  void map_file();
  void parse_header();
  void release();

  std::string path_;
  void* map_ = nullptr;  // the whole file, PROT_READ / MAP_PRIVATE
  size_t map_size_ = 0;
  std::vector<TensorEntry> tensors_;
  std::unordered_map<std::string, size_t> index_;  // name -> position in tensors_
  std::map<std::string, std::string> metadata_;
};

// A checkpoint folder: either model.safetensors, or model.safetensors.index.json ({"weight_map": {tensor: shard file}}) and
// its shards. Every shard is opened and cross-checked against the index at open. Implemented in checkpoint_files.cpp.
class SafetensorsCheckpoint {
 public:
  static SafetensorsCheckpoint open(const std::string& folder);

  const TensorEntry* find(const std::string& name) const;  // nullptr if absent
  std::vector<std::string> names() const;                  // sorted
  const std::string& file_of(const std::string& name) const;  // path of the file holding `name`; throws if absent
  const std::vector<SafetensorsFile>& files() const { return files_; }  // one per file (shards by path)

 private:
  struct Located {
    const TensorEntry* entry;
    size_t file;  // index into files_
  };
  SafetensorsCheckpoint() = default;
  void open_sharded(const std::string& index_path);
  void add_file(SafetensorsFile file);

  std::string folder_;
  std::vector<SafetensorsFile> files_;
  std::unordered_map<std::string, Located> tensors_;
};

// Hints for the kernel about how a range of a read-only file mapping will be used (madvise). Only hints: failures are
// ignored. WillNeed starts reading the pages in (range rounded outward to pages); DontNeed drops the range from this
// process's page tables once consumed, so resident memory does not grow with the checkpoint (range rounded inward, so
// the pages a neighbouring tensor shares stay mapped; the page cache keeps the data, a later touch maps it again);
// Sequential asks for aggressive read-ahead.
enum class MapAdvice { Sequential, WillNeed, DontNeed };
void advise_mapped(const void* data, size_t nbytes, MapAdvice advice);

// Reads a floating tensor (F64/F32/F16/BF16) into fp32. dst: (entry.numel()). Throws, naming the tensor, for other dtypes.
void read_as_f32(const TensorEntry& entry, float* dst);

struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const void* data;  // nbytes bytes, any alignment
  size_t nbytes;
};

// Writes one safetensors file: header JSON padded with spaces to a multiple of 8 bytes, tensors back to back in the given
// order. Validates nbytes == numel * dtype size and unique names before creating anything. Writes path + ".tmp", fsyncs,
// then renames it onto `path`.
void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// The bytes write_safetensors writes before the data: the u64 little-endian header length, then the header JSON padded
// with spaces to a multiple of 8 bytes, for `tensors` back to back in the given order (their data is not read). Validates
// as write_safetensors does; errors name `path`. The cooperative writer (io/checkpoint_writer.h) writes this, then
// places each tensor at its offset: 8 + header + the sum of the nbytes before it.
std::string safetensors_head(const std::string& path, const std::vector<TensorToWrite>& tensors,
                             const std::map<std::string, std::string>& metadata);

// Parses JSON like nlohmann::ordered_json::parse (object keys keep file order) but also rejects duplicate keys in any object,
// which nlohmann would silently collapse. Errors read "<context> is not valid JSON: ..." / "<context> has the key 'k' twice".
nlohmann::ordered_json parse_json_strict(const std::string& text, const std::string& context);

}  // namespace moetune
