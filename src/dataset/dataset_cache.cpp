// Why: see dataset_cache.h.
#include "dataset/dataset_cache.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>
#include <variant>

#include "core/error.h"

namespace moetune {

namespace fs = std::filesystem;
using nlohmann::ordered_json;

static_assert(std::endian::native == std::endian::little, "the dataset cache is written in the host's byte order");

namespace {

constexpr char kMagic[16] = "moetune-dataset";
constexpr size_t kPreambleBytes = 128;
constexpr size_t kIndexEntryBytes = 24;
constexpr size_t kMaxBadExamples = 20;

void put_u64(unsigned char* at, uint64_t value) { std::memcpy(at, &value, 8); }
uint64_t get_u64(const unsigned char* at) {
  uint64_t value;
  std::memcpy(&value, at, 8);
  return value;
}

bool is_blank(const std::string& line) {
  return std::all_of(line.begin(), line.end(), [](char c) { return c == ' ' || c == '\t' || c == '\r'; });
}

// POSIX file writing with checked calls: the cache must either be complete or fail loudly.
class OutFile {
 public:
  explicit OutFile(std::string path) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) fail(path_, ": cannot open for writing (", std::strerror(errno), ")");
  }
  ~OutFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  void write(const void* bytes, size_t size) {
    const char* p = static_cast<const char*>(bytes);
    while (size > 0) {
      const ssize_t n = ::write(fd_, p, size);
      if (n < 0) {
        if (errno == EINTR) continue;
        fail(path_, ": write error (", std::strerror(errno), ")");
      }
      p += n;
      size -= static_cast<size_t>(n);
      offset_ += static_cast<uint64_t>(n);
    }
  }
  void pad_to(uint64_t alignment) {
    static const char zeros[64] = {};
    while (offset_ % alignment != 0) write(zeros, std::min<uint64_t>(alignment - offset_ % alignment, sizeof zeros));
  }
  void write_at(uint64_t position, const void* bytes, size_t size) {
    if (::pwrite(fd_, bytes, size, static_cast<off_t>(position)) != static_cast<ssize_t>(size))
      fail(path_, ": write error (", std::strerror(errno), ")");
  }
  void close() {
    if (::fsync(fd_) != 0) fail(path_, ": fsync failed (", std::strerror(errno), ")");
    if (::close(fd_) != 0) fail(path_, ": close failed (", std::strerror(errno), ")");
    fd_ = -1;
  }
  uint64_t offset() const { return offset_; }

 private:
  std::string path_;
  int fd_ = -1;
  uint64_t offset_ = 0;
};

std::string human_bytes(double bytes) {
  const char* units[] = {"B", "kB", "MB", "GB", "TB"};
  int unit = 0;
  while (bytes >= 1000.0 && unit < 4) {
    bytes /= 1000.0;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof text, unit == 0 ? "%.0f %s" : "%.1f %s", bytes, units[unit]);
  return text;
}

class Progress {
 public:
  Progress(bool enabled, uint64_t total_bytes) : enabled_(enabled), total_(total_bytes), start_(clock::now()) {}
  void update(uint64_t bytes, uint64_t samples, bool final = false) {
    if (!enabled_) return;
    const auto now = clock::now();
    if (!final && now - last_ < std::chrono::milliseconds(200)) return;
    last_ = now;
    const double seconds = std::chrono::duration<double>(now - start_).count();
    const double fraction = total_ > 0 ? static_cast<double>(bytes) / static_cast<double>(total_) : 1.0;
    constexpr int kWidth = 24;
    const int filled = static_cast<int>(fraction * kWidth);
    std::string bar(static_cast<size_t>(filled), '#');
    bar.resize(kWidth, '.');
    const double rate = seconds > 0 ? static_cast<double>(samples) / seconds : 0.0;
    const double eta = fraction > 0 ? seconds * (1.0 - fraction) / fraction : 0.0;
    std::fprintf(stderr, "\rtokenize %3d%% |%s| %s / %s, %llu samples, %.0f samples/s, ETA %ld:%02ld   ",
                 static_cast<int>(fraction * 100), bar.c_str(), human_bytes(static_cast<double>(bytes)).c_str(),
                 human_bytes(static_cast<double>(total_)).c_str(), static_cast<unsigned long long>(samples), rate,
                 static_cast<long>(eta) / 60, static_cast<long>(eta) % 60);
    if (final) std::fputc('\n', stderr);
    std::fflush(stderr);
  }

 private:
  using clock = std::chrono::steady_clock;
  bool enabled_;
  uint64_t total_;
  clock::time_point start_, last_{};
};

// Encodes lines[i] for every i on `threads` threads; results[i] is the sample or the error text.
using Result = std::variant<EncodedSample, std::string>;
void encode_chunk(const SampleEncoder& encoder, const std::vector<std::string>& lines, std::vector<Result>& results,
                  int threads) {
  results.assign(lines.size(), Result{});
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next.fetch_add(1); i < lines.size(); i = next.fetch_add(1)) {
      try {
        results[i] = encoder.encode_line(lines[i]);
      } catch (const SampleError& error) {
        results[i] = std::string(error.what());
      } catch (const std::exception& error) {
        results[i] = std::string("cannot encode: ") + error.what();
      }
    }
  };
  const int count = std::max(1, std::min<int>(threads, static_cast<int>(lines.size())));
  if (count == 1) {
    work();
    return;
  }
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(count - 1));
  for (int t = 1; t < count; ++t) pool.emplace_back(work);
  work();
  for (std::thread& thread : pool) thread.join();
}

}  // namespace

std::vector<std::string> list_data_files(const std::string& path) {
  std::error_code error;
  const auto status = fs::status(path, error);
  if (!fs::exists(status)) fail(path, ": no such file or folder");
  if (fs::is_regular_file(status)) return {path};
  if (!fs::is_directory(status)) fail(path, ": not a regular file or folder");
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(path))
    if (entry.is_regular_file() && entry.path().extension() == ".jsonl") files.push_back(entry.path().string());
  std::sort(files.begin(), files.end());
  if (files.empty()) fail(path, ": folder holds no *.jsonl file");
  return files;
}

DataFormat detect_data_format(const std::vector<std::string>& files) {
  for (const std::string& file : files) {
    std::ifstream in(file);
    if (!in) fail(file, ": cannot open for reading (", std::strerror(errno), ")");
    std::string line;
    for (uint64_t number = 1; std::getline(in, line); ++number) {
      if (is_blank(line)) continue;
      ordered_json record;
      try {
        record = ordered_json::parse(line);
      } catch (const nlohmann::json::parse_error& parse) {
        fail(file, ":", number, ": malformed JSON, cannot tell the data format (", parse.what(), ")");
      }
      const std::optional<DataFormat> format = detect_format(record);
      if (!format)
        fail(file, ":", number, ": cannot tell the data format: the first record has none of \"messages\", "
             "\"prompt\" + \"completion\", \"text\", \"input_ids\" (or give --format)");
      return *format;
    }
  }
  fail(files.empty() ? std::string("data") : files.front(), ": no records (only blank lines)");
}

ordered_json DatasetCache::key_fields(const std::vector<std::string>& files, const SampleEncoder& encoder) {
  ordered_json listed = ordered_json::array();
  for (const std::string& file : files) {
    std::error_code error;
    const uint64_t size = fs::file_size(file, error);
    if (error) fail(file, ": cannot read size (", error.message(), ")");
    const auto mtime = fs::last_write_time(file, error);
    if (error) fail(file, ": cannot read modification time (", error.message(), ")");
    listed.push_back({{"path", fs::absolute(file).lexically_normal().string()},
                      {"bytes", size},
                      {"mtime_ns", static_cast<int64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                                            mtime.time_since_epoch())
                                                            .count())}});
  }
  return {{"cache_version", kVersion}, {"encoder", encoder.fingerprint()}, {"files", listed}};
}

std::string DatasetCache::key_of(const ordered_json& fields) {
  const std::string text = fields.dump();
  return hex64(fnv1a64(text)) + hex64(fnv1a64(text, 0x84222325cbf29ce4ull));
}

bool DatasetCache::is_cache_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[16] = {};
  if (!in.read(magic, sizeof magic)) return false;
  return std::memcmp(magic, kMagic, sizeof magic) == 0;
}

void DatasetCache::build(const std::string& path, const std::vector<std::string>& files, const SampleEncoder& encoder,
                         const CacheBuildOptions& options) {
  const ordered_json fields = key_fields(files, encoder);
  const int threads = options.threads > 0 ? options.threads : std::max(1u, std::thread::hardware_concurrency());
  uint64_t total_bytes = 0;
  for (const auto& file : fields["files"]) total_bytes += file["bytes"].get<uint64_t>();

  const fs::path final_path = fs::absolute(path);
  if (final_path.has_parent_path()) {
    std::error_code error;
    fs::create_directories(final_path.parent_path(), error);
    if (error) fail(final_path.parent_path().string(), ": cannot create folder (", error.message(), ")");
  }
  const std::string staging = final_path.string() + ".tmp-" + std::to_string(::getpid());
  const std::string index_staging = staging + ".index";
  struct Cleanup {
    std::string a, b;
    bool armed = true;
    ~Cleanup() {
      if (!armed) return;
      std::error_code ignored;
      fs::remove(a, ignored);
      fs::remove(b, ignored);
    }
  } cleanup{staging, index_staging};

  OutFile data(staging), index(index_staging);
  std::vector<unsigned char> preamble(kPreambleBytes, 0);
  data.write(preamble.data(), preamble.size());

  uint64_t samples = 0, tokens = 0, loss_tokens = 0, bytes_read = 0, blank_lines = 0, bad = 0, max_length = 0;
  int64_t max_id = -1;
  ordered_json bad_examples = ordered_json::array();
  Progress progress(options.progress, total_bytes);
  std::vector<std::string> lines;
  std::vector<uint64_t> line_numbers;
  std::vector<Result> results;

  for (size_t f = 0; f < files.size(); ++f) {
    const std::string& file = files[f];
    std::ifstream in(file, std::ios::binary);
    if (!in) fail(file, ": cannot open for reading (", std::strerror(errno), ")");
    uint64_t line_number = 0;
    bool done = false;
    while (!done) {
      lines.clear();
      line_numbers.clear();
      std::string line;
      while (lines.size() < options.lines_per_chunk) {
        if (!std::getline(in, line)) {
          done = true;
          break;
        }
        ++line_number;
        bytes_read += line.size() + 1;
        if (is_blank(line)) {
          ++blank_lines;
          continue;
        }
        lines.push_back(std::move(line));
        line_numbers.push_back(line_number);
      }
      if (in.bad()) fail(file, ": read error (", std::strerror(errno), ")");
      encode_chunk(encoder, lines, results, threads);
      for (size_t i = 0; i < results.size(); ++i) {
        if (const std::string* error = std::get_if<std::string>(&results[i])) {
          const std::string where = str(file, ":", line_numbers[i]);
          if (!options.skip_bad) {
            if (options.progress) std::fputc('\n', stderr);
            fail(where, ": ", *error, " (--bad-samples skip leaves such samples out)");
          }
          ++bad;
          if (bad_examples.size() < kMaxBadExamples) bad_examples.push_back(where + ": " + *error);
          continue;
        }
        const EncodedSample& sample = std::get<EncodedSample>(results[i]);
        const uint32_t length = static_cast<uint32_t>(sample.ids.size());
        unsigned char entry[kIndexEntryBytes];
        put_u64(entry, data.offset() - kPreambleBytes);
        std::memcpy(entry + 8, &length, 4);
        const uint32_t file_index = static_cast<uint32_t>(f);
        std::memcpy(entry + 12, &file_index, 4);
        put_u64(entry + 16, line_numbers[i]);
        index.write(entry, sizeof entry);
        data.write(sample.ids.data(), sample.ids.size() * sizeof(int32_t));
        data.write(sample.loss.data(), sample.loss.size());
        data.pad_to(4);
        ++samples;
        tokens += length;
        max_length = std::max<uint64_t>(max_length, length);
        for (size_t t = 0; t < sample.ids.size(); ++t) {
          max_id = std::max<int64_t>(max_id, sample.ids[t]);
          loss_tokens += sample.loss[t];
        }
      }
      progress.update(bytes_read, samples);
    }
  }
  progress.update(total_bytes, samples, true);
  if (samples == 0)
    fail(files.size() == 1 ? files[0] : "data", ": no usable sample (", bad, " bad, ", blank_lines, " blank lines)");

  data.pad_to(8);
  const uint64_t data_bytes = data.offset() - kPreambleBytes;
  const uint64_t index_offset = data.offset();
  index.close();
  {
    std::ifstream in(index_staging, std::ios::binary);
    std::vector<char> buffer(1 << 20);
    while (in) {
      in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
      if (in.gcount() > 0) data.write(buffer.data(), static_cast<size_t>(in.gcount()));
    }
  }
  const uint64_t header_offset = data.offset();
  ordered_json file_names = ordered_json::array();
  for (const std::string& file : files) file_names.push_back(fs::absolute(file).lexically_normal().string());
  const ordered_json header = {{"format", "moetune-dataset-cache"},
                               {"version", kVersion},
                               {"key", key_of(fields)},
                               {"key_fields", fields},
                               {"files", file_names},
                               {"data_format", data_format_name(encoder.format())},
                               {"samples", samples},
                               {"tokens", tokens},
                               {"loss_tokens", loss_tokens},
                               {"max_id", max_id},
                               {"max_length", max_length},
                               {"pad_id", encoder.pad_id()},
                               {"blank_lines", blank_lines},
                               {"bad_samples", {{"count", bad}, {"examples", bad_examples}}}};
  const std::string header_text = header.dump(1);
  data.write(header_text.data(), header_text.size());
  std::memcpy(preamble.data(), kMagic, sizeof kMagic);
  put_u64(&preamble[16], kVersion);
  put_u64(&preamble[24], kPreambleBytes);
  put_u64(&preamble[32], data_bytes);
  put_u64(&preamble[40], index_offset);
  put_u64(&preamble[48], samples);
  put_u64(&preamble[56], header_offset);
  put_u64(&preamble[64], header_text.size());
  data.write_at(0, preamble.data(), preamble.size());
  data.close();
  std::error_code error;
  fs::rename(staging, final_path, error);
  if (error) fail(final_path.string(), ": cannot move the new cache into place (", error.message(), ")");
  fs::remove(index_staging, error);
  cleanup.armed = false;
}

DatasetCache DatasetCache::open(const std::string& path) {
  DatasetCache cache;
  cache.path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, ": cannot open (", std::strerror(errno), ")");
  struct stat info {};
  if (::fstat(fd, &info) != 0) {
    ::close(fd);
    fail(path, ": cannot stat (", std::strerror(errno), ")");
  }
  cache.map_bytes_ = static_cast<size_t>(info.st_size);
  if (cache.map_bytes_ < kPreambleBytes) {
    ::close(fd);
    fail(path, ": not a moetune dataset cache (", cache.map_bytes_, " bytes)");
  }
  void* map = ::mmap(nullptr, cache.map_bytes_, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) fail(path, ": cannot memory-map (", std::strerror(errno), ")");
  cache.map_ = static_cast<const unsigned char*>(map);
  ::madvise(map, cache.map_bytes_, MADV_RANDOM);

  const unsigned char* p = cache.map_;
  if (std::memcmp(p, kMagic, sizeof kMagic) != 0) fail(path, ": not a moetune dataset cache (bad magic)");
  const uint64_t version = get_u64(p + 16);
  if (version != kVersion) fail(path, ": dataset cache version ", version, ", this moetune reads version ", kVersion);
  const uint64_t data_offset = get_u64(p + 24), data_bytes = get_u64(p + 32), index_offset = get_u64(p + 40),
                 samples = get_u64(p + 48), header_offset = get_u64(p + 56), header_bytes = get_u64(p + 64);
  const uint64_t size = cache.map_bytes_;
  if (data_offset != kPreambleBytes || data_offset + data_bytes > size || index_offset < data_offset + data_bytes ||
      samples > (size - index_offset) / kIndexEntryBytes || index_offset + samples * kIndexEntryBytes > header_offset ||
      header_offset + header_bytes != size)
    fail(path, ": dataset cache sections do not fit the file (truncated or corrupt)");
  cache.data_ = p + data_offset;
  cache.data_bytes_ = data_bytes;
  cache.index_ = p + index_offset;
  cache.samples_ = samples;
  try {
    cache.header_ = ordered_json::parse(std::string(reinterpret_cast<const char*>(p + header_offset), header_bytes));
  } catch (const nlohmann::json::parse_error& error) {
    fail(path, ": dataset cache header is not valid JSON (", error.what(), ")");
  }
  if (!cache.header_.is_object() || cache.header_.value("samples", uint64_t{0}) != samples ||
      !cache.header_.contains("key") || !cache.header_.contains("files") || !cache.header_["files"].is_array())
    fail(path, ": dataset cache header disagrees with its preamble");
  cache.key_ = cache.header_["key"].get<std::string>();
  for (const auto& file : cache.header_["files"]) cache.files_.push_back(file.get<std::string>());
  // Every index entry must point inside the data section (a corrupt file fails here, not in training).
  for (size_t i = 0; i < samples; ++i) {
    const unsigned char* entry = cache.index_ + i * kIndexEntryBytes;
    uint32_t length, file;
    std::memcpy(&length, entry + 8, 4);
    std::memcpy(&file, entry + 12, 4);
    const uint64_t offset = get_u64(entry);
    if (offset % 4 != 0 || offset + uint64_t{length} * 5 > data_bytes || file >= cache.files_.size() || length == 0)
      fail(path, ": dataset cache index entry ", i, " points outside the data (corrupt)");
  }
  return cache;
}

DatasetCache DatasetCache::open_or_build(const std::string& path, const std::vector<std::string>& files,
                                         const SampleEncoder& encoder, const CacheBuildOptions& options, bool* built) {
  const std::string key = key_of(key_fields(files, encoder));
  if (fs::exists(path) && is_cache_file(path)) {
    try {
      DatasetCache cache = open(path);
      if (cache.key() == key) {
        if (built) *built = false;
        return cache;
      }
    } catch (const Error&) {
      // unreadable: rebuilt below
    }
  }
  build(path, files, encoder, options);
  if (built) *built = true;
  return open(path);
}

DatasetCache::DatasetCache(DatasetCache&& other) noexcept { *this = std::move(other); }

DatasetCache& DatasetCache::operator=(DatasetCache&& other) noexcept {
  if (this != &other) {
    release();
    path_ = std::move(other.path_);
    map_ = std::exchange(other.map_, nullptr);
    map_bytes_ = std::exchange(other.map_bytes_, 0);
    data_ = other.data_;
    index_ = other.index_;
    samples_ = other.samples_;
    data_bytes_ = other.data_bytes_;
    header_ = std::move(other.header_);
    key_ = std::move(other.key_);
    files_ = std::move(other.files_);
  }
  return *this;
}

DatasetCache::~DatasetCache() { release(); }

void DatasetCache::release() {
  if (map_) ::munmap(const_cast<unsigned char*>(map_), map_bytes_);
  map_ = nullptr;
}

DatasetCache::SampleView DatasetCache::sample(size_t index) const {
  MT_ASSERT(index < samples_);
  const unsigned char* entry = index_ + index * kIndexEntryBytes;
  SampleView view{};
  const uint64_t offset = get_u64(entry);
  std::memcpy(&view.length, entry + 8, 4);
  std::memcpy(&view.file, entry + 12, 4);
  view.line = get_u64(entry + 16);
  view.ids = reinterpret_cast<const int32_t*>(data_ + offset);
  view.loss = data_ + offset + uint64_t{view.length} * 4;
  return view;
}

std::string DatasetCache::where(size_t index) const {
  const SampleView view = sample(index);
  return str(files_[view.file], ":", view.line);
}

int64_t DatasetCache::bad_count() const { return header_["bad_samples"].value("count", int64_t{0}); }

int32_t DatasetCache::max_id() const { return header_.value("max_id", int32_t{-1}); }

}  // namespace moetune
