// Why: the safetensors reader and writer in one place, so both sides agree on the byte layout. The reader validates every
// header field (types, sizes with overflow checks, exact coverage of the data section) before exposing a single pointer; see
// safetensors.h for the format.
#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <unordered_set>
#include <utility>

#include "core/error.h"
#include "io/file_io.h"

namespace moetune {

using nlohmann::ordered_json;

namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull * 1000 * 1000;

template <class... Parts>
[[noreturn]] void fail_in_file(const std::string& path, Parts&&... parts) {
  fail("safetensors file '", path, "': ", std::forward<Parts>(parts)...);
}

template <class... Parts>
[[noreturn]] void fail_in_tensor(const std::string& path, const std::string& name, Parts&&... parts) {
  fail_in_file(path, "tensor '", name, "': ", std::forward<Parts>(parts)...);
}

// Bytes held by a tensor of this shape and dtype; false if a dimension is negative or the count overflows 63 bits.
bool tensor_nbytes(const std::vector<int64_t>& shape, DType dtype, uint64_t* nbytes) {
  uint64_t count = static_cast<uint64_t>(dtype_size(dtype));
  for (int64_t dim : shape) {
    if (dim < 0 || __builtin_mul_overflow(count, static_cast<uint64_t>(dim), &count)) return false;
  }
  if (count > static_cast<uint64_t>(INT64_MAX)) return false;
  *nbytes = count;
  return true;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

// nlohmann parses every non-negative integer literal as unsigned, and negative ones and fractions as other number types.
bool is_non_negative_integer(const ordered_json& value) { return value.is_number_unsigned(); }

// A JSON value for an error message: one line, cut short so a hostile header cannot produce a megabyte of message.
std::string brief(const ordered_json& value) {
  std::string text = value.dump();
  return text.size() <= 80 ? text : text.substr(0, 77) + "...";
}

// One header entry, before the cross-tensor checks (offsets relative to the data section).
struct Span {
  uint64_t begin;
  uint64_t end;
  size_t tensor;  // index into tensors_
};

TensorEntry parse_entry(const std::string& path, const std::string& name, const ordered_json& value,
                        const unsigned char* data, uint64_t data_size, Span* span) {
  if (!value.is_object() || value.size() != 3 || !value.contains("dtype") || !value.contains("shape") ||
      !value.contains("data_offsets"))
    fail_in_tensor(path, name, "entry must be an object with exactly the keys dtype, shape, data_offsets, found ",
                   brief(value));
  TensorEntry entry{name, DType::F32, {}, nullptr, 0};
  const ordered_json& dtype = value["dtype"];
  if (!dtype.is_string() || !parse_dtype(dtype.get<std::string>(), &entry.dtype))
    fail_in_tensor(path, name, "unknown dtype ", brief(dtype));
  const ordered_json& shape = value["shape"];
  if (!shape.is_array()) fail_in_tensor(path, name, "shape must be a list of non-negative integers, found ", brief(shape));
  for (const ordered_json& dim : shape) {
    if (!is_non_negative_integer(dim) || dim.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
      fail_in_tensor(path, name, "shape must be a list of non-negative integers, found ", brief(shape));
    entry.shape.push_back(dim.get<int64_t>());
  }
  const ordered_json& offsets = value["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2 || !is_non_negative_integer(offsets[0]) ||
      !is_non_negative_integer(offsets[1]) || offsets[0].get<uint64_t>() > offsets[1].get<uint64_t>())
    fail_in_tensor(path, name, "data_offsets must be two non-negative integers [begin, end] with begin <= end, found ",
                   brief(offsets));
  const uint64_t begin = offsets[0].get<uint64_t>();
  const uint64_t end = offsets[1].get<uint64_t>();
  uint64_t nbytes = 0;
  if (!tensor_nbytes(entry.shape, entry.dtype, &nbytes))
    fail_in_tensor(path, name, "shape ", shape_string(entry.shape), " of ", dtype_name(entry.dtype),
                   " is too large (byte count overflows)");
  if (end - begin != nbytes)
    fail_in_tensor(path, name, "data_offsets [", begin, ", ", end, "] span ", end - begin, " bytes but shape ",
                   shape_string(entry.shape), " of ", dtype_name(entry.dtype), " needs ", nbytes);
  if (end > data_size)
    fail_in_tensor(path, name, "data_offsets [", begin, ", ", end, "] lie outside the data section of ", data_size,
                   " bytes (truncated file?)");
  entry.data = data + begin;
  entry.nbytes = static_cast<size_t>(nbytes);
  span->begin = begin;
  span->end = end;
  return entry;
}

std::map<std::string, std::string> parse_metadata(const std::string& path, const ordered_json& value) {
  if (!value.is_object()) fail_in_file(path, "__metadata__ must be an object of strings, found ", brief(value));
  std::map<std::string, std::string> metadata;
  for (const auto& [key, item] : value.items()) {
    if (!item.is_string())
      fail_in_file(path, "__metadata__ key '", key, "' must have a string value, found ", brief(item));
    metadata[key] = item.get<std::string>();
  }
  return metadata;
}

// The length field and the padded header text; validates every tensor first so a bad call creates no file.
// `with_data`: the tensors carry their bytes (write_safetensors), so a null pointer is an error.
std::string build_head(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata, bool with_data) {
  ordered_json header = ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::unordered_set<std::string> seen;
  uint64_t offset = 0;
  for (const TensorToWrite& tensor : tensors) {
    if (tensor.name == "__metadata__") fail_in_file(path, "'__metadata__' cannot be a tensor name");
    if (!seen.insert(tensor.name).second) fail_in_tensor(path, tensor.name, "written twice");
    uint64_t nbytes = 0;
    if (!tensor_nbytes(tensor.shape, tensor.dtype, &nbytes))
      fail_in_tensor(path, tensor.name, "shape ", shape_string(tensor.shape), " is negative or too large");
    if (nbytes != tensor.nbytes)
      fail_in_tensor(path, tensor.name, "given ", tensor.nbytes, " bytes but shape ", shape_string(tensor.shape), " of ",
                     dtype_name(tensor.dtype), " needs ", nbytes);
    if (with_data && nbytes > 0 && tensor.data == nullptr) fail_in_tensor(path, tensor.name, "data is null");
    header[tensor.name] = {{"dtype", dtype_name(tensor.dtype)},
                           {"shape", tensor.shape},
                           {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const ordered_json::exception& error) {  // e.g. a name that is not valid UTF-8
    fail_in_file(path, "cannot encode the header: ", error.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string head(8, '\0');
  for (int i = 0; i < 8; ++i) head[i] = static_cast<char>(static_cast<uint64_t>(text.size()) >> (8 * i));
  return head + text;
}

// Writes `head` (length + header), then lets `write_data(fd, temp)` write the data section; fsync, rename, fsync the
// folder.
void write_file_atomically(const std::string& path, const std::string& head,
                           const std::function<void(int fd, const std::string& temp)>& write_data) {
  const std::string temp = path + ".tmp";
  try {
    FdGuard file{::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)};
    if (file.fd < 0) fail("cannot create '", temp, "': ", std::strerror(errno));
    write_all(file.fd, temp, head.data(), head.size());
    write_data(file.fd, temp);
    sync_and_close(file, temp);
    if (::rename(temp.c_str(), path.c_str()) != 0)
      fail("cannot rename '", temp, "' to '", path, "': ", std::strerror(errno));
  } catch (...) {
    ::unlink(temp.c_str());
    throw;
  }
  const std::string folder = std::filesystem::path(path).parent_path().string();
  fsync_path(folder.empty() ? "." : folder);
}

}  // namespace

int64_t TensorEntry::numel() const {
  int64_t count = 1;
  for (int64_t dim : shape) count *= dim;
  return count;
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile file;
  file.path_ = path;
  file.map_file();
  file.parse_header();  // on a throw, `file`'s destructor unmaps
  return file;
}

SafetensorsFile::SafetensorsFile(SafetensorsFile&& other) noexcept { *this = std::move(other); }

SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&& other) noexcept {
  if (this != &other) {
    release();
    path_ = std::move(other.path_);
    map_ = std::exchange(other.map_, nullptr);
    map_size_ = std::exchange(other.map_size_, 0);
    tensors_ = std::move(other.tensors_);
    index_ = std::move(other.index_);
    metadata_ = std::move(other.metadata_);
  }
  return *this;
}

SafetensorsFile::~SafetensorsFile() { release(); }

void SafetensorsFile::release() {
  if (map_ != nullptr) ::munmap(map_, map_size_);
  map_ = nullptr;
  map_size_ = 0;
}

const TensorEntry* SafetensorsFile::find(const std::string& name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

void SafetensorsFile::map_file() {
  FdGuard file{::open(path_.c_str(), O_RDONLY | O_CLOEXEC)};
  if (file.fd < 0) fail_in_file(path_, "cannot open: ", std::strerror(errno));
  struct stat info {};
  if (::fstat(file.fd, &info) != 0) fail_in_file(path_, "cannot stat: ", std::strerror(errno));
  if (!S_ISREG(info.st_mode)) fail_in_file(path_, "not a regular file");
  const auto size = static_cast<uint64_t>(info.st_size);
  if (size < 8) fail_in_file(path_, "file is ", size, " bytes, shorter than the 8-byte header length");
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, file.fd, 0);  // size >= 8: never a 0-byte mapping
  if (map == MAP_FAILED) fail_in_file(path_, "cannot mmap: ", std::strerror(errno));
  map_ = map;
  map_size_ = size;
}

void SafetensorsFile::parse_header() {
  const auto* bytes = static_cast<const unsigned char*>(map_);
  uint64_t header_size = 0;
  for (int i = 0; i < 8; ++i) header_size |= static_cast<uint64_t>(bytes[i]) << (8 * i);
  if (header_size > kMaxHeaderBytes)
    fail_in_file(path_, "header length ", header_size, " exceeds the ", kMaxHeaderBytes / 1000000, " MB limit");
  if (header_size > map_size_ - 8)
    fail_in_file(path_, "header length ", header_size, " exceeds the ", map_size_ - 8,
                 " bytes after the length field (truncated file?)");
  const std::string text(reinterpret_cast<const char*>(bytes + 8), header_size);
  const ordered_json header = parse_json_strict(text, str("safetensors file '", path_, "': header"));
  if (!header.is_object()) fail_in_file(path_, "header must be a JSON object, found ", header.type_name());

  const unsigned char* data = bytes + 8 + header_size;
  const uint64_t data_size = map_size_ - 8 - header_size;
  std::vector<Span> spans;
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      metadata_ = parse_metadata(path_, value);
      continue;
    }
    Span span{0, 0, tensors_.size()};
    tensors_.push_back(parse_entry(path_, key, value, data, data_size, &span));
    index_.emplace(key, span.tensor);
    spans.push_back(span);
  }

  // The data section must be covered exactly: sorted by offset, each tensor starts where the previous one ended.
  std::sort(spans.begin(), spans.end(),
            [](const Span& a, const Span& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
  uint64_t covered = 0;
  const std::string* previous = nullptr;
  for (const Span& span : spans) {
    const std::string& name = tensors_[span.tensor].name;
    if (span.begin < covered)
      fail_in_tensor(path_, name, "data_offsets [", span.begin, ", ", span.end, "] overlap tensor '", *previous, "'");
    if (span.begin > covered)
      fail_in_tensor(path_, name, "data section bytes [", covered, ", ", span.begin,
                     ") before this tensor belong to no tensor");
    covered = span.end;
    previous = &name;
  }
  if (covered != data_size)
    fail_in_file(path_, "data section bytes [", covered, ", ", data_size, ") at its end belong to no tensor");
}

void read_as_f32(const TensorEntry& entry, float* dst) {
  if (!dtype_is_float(entry.dtype))
    fail("tensor '", entry.name, "' has dtype ", dtype_name(entry.dtype), ", expected a floating type (F64/F32/F16/BF16)");
  convert_to_f32(entry.dtype, entry.data, dst, static_cast<size_t>(entry.numel()));
}

void advise_mapped(const void* data, size_t nbytes, MapAdvice advice) {
  if (data == nullptr || nbytes == 0) return;
  static const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<uintptr_t>(data);
  const uintptr_t end = begin + nbytes;
  uintptr_t first, last;
  if (advice == MapAdvice::DontNeed) {  // inward: only pages wholly inside the range
    first = (begin + page - 1) / page * page;
    last = end / page * page;
  } else {  // outward
    first = begin / page * page;
    last = (end + page - 1) / page * page;
  }
  if (last <= first) return;
  const int flag = advice == MapAdvice::Sequential ? MADV_SEQUENTIAL
                   : advice == MapAdvice::WillNeed ? MADV_WILLNEED
                                                   : MADV_DONTNEED;
  ::madvise(reinterpret_cast<void*>(first), last - first, flag);  // a hint: a failure changes nothing that matters
}

void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const std::string head = build_head(path, tensors, metadata, /*with_data=*/true);
  write_file_atomically(path, head, [&](int fd, const std::string& temp) {
    for (const TensorToWrite& tensor : tensors) write_all(fd, temp, tensor.data, tensor.nbytes);
  });
}

std::string safetensors_head(const std::string& path, const std::vector<TensorToWrite>& tensors,
                             const std::map<std::string, std::string>& metadata) {
  return build_head(path, tensors, metadata, /*with_data=*/false);
}

ordered_json parse_json_strict(const std::string& text, const std::string& context) {
  std::vector<std::unordered_set<std::string>> open_objects;  // keys seen so far, one set per object being parsed
  std::string duplicate;
  const auto track_keys = [&](int /*depth*/, ordered_json::parse_event_t event, ordered_json& parsed) {
    if (event == ordered_json::parse_event_t::object_start) {
      open_objects.emplace_back();
    } else if (event == ordered_json::parse_event_t::object_end) {
      open_objects.pop_back();
    } else if (event == ordered_json::parse_event_t::key && duplicate.empty() &&
               !open_objects.back().insert(parsed.get<std::string>()).second) {
      duplicate = parsed.get<std::string>();
    }
    return true;
  };
  ordered_json result;
  try {
    result = ordered_json::parse(text.begin(), text.end(), track_keys);
  } catch (const ordered_json::exception& error) {
    fail(context, " is not valid JSON: ", error.what());
  }
  if (!duplicate.empty()) fail(context, " has the key '", duplicate, "' twice");
  return result;
}

}  // namespace moetune
