// Why: checkpoints are the engine's only input that comes from outside; these tests pin the safetensors round trip and show
// that every malformed file we know of ends as one moetune::Error naming the file and the tensor (never a crash or misread).
// Hostile files are built byte by byte, so each test breaks exactly one rule.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/safetensors.h"

namespace moetune {
namespace {

namespace fs = std::filesystem;

// A fresh folder per test, removed afterwards.
class TempFolder {
 public:
  TempFolder() {
    static int counter = 0;
    const auto* test = testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::path(testing::TempDir()) /
            ("moetune_st_" + std::string(test->name()) + "_" + std::to_string(::getpid()) + "_" +
             std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempFolder() { fs::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string path() const { return path_.string(); }

 private:
  fs::path path_;
};

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::string length_prefix(uint64_t length) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>(length >> (8 * i));
  return bytes;
}

// A raw safetensors file: the real header length, `header` as given, then `data_bytes` bytes of filler.
void write_raw(const std::string& path, const std::string& header, size_t data_bytes) {
  write_bytes(path, length_prefix(header.size()) + header + std::string(data_bytes, '\x5a'));
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The message of the moetune::Error that open() throws (a test failure if it does not throw, or the message spans lines).
std::string open_error(const std::string& path) {
  try {
    SafetensorsFile::open(path);
  } catch (const Error& error) {
    const std::string message = error.what();
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    return message;
  }
  ADD_FAILURE() << "open(" << path << ") did not throw";
  return "";
}

std::string checkpoint_error(const std::string& folder) {
  try {
    SafetensorsCheckpoint::open(folder);
  } catch (const Error& error) {
    return error.what();
  }
  ADD_FAILURE() << "SafetensorsCheckpoint::open(" << folder << ") did not throw";
  return "";
}

#define EXPECT_CONTAINS(text, part) \
  EXPECT_NE(std::string(text).find(part), std::string::npos) << "message: " << (text) << "\nexpected to contain: " << (part)

// Checks that opening a file with this header (and data section size) fails, naming the file and `tensor` (if given).
void expect_bad_header(const TempFolder& dir, const std::string& header, size_t data_bytes, const std::string& tensor,
                       const std::string& reason) {
  const std::string path = dir.file("bad.safetensors");
  write_raw(path, header, data_bytes);
  const std::string message = open_error(path);
  EXPECT_CONTAINS(message, path);
  if (!tensor.empty()) {
    EXPECT_CONTAINS(message, "'" + tensor + "'");
  }
  EXPECT_CONTAINS(message, reason);
}

// ---- round trips ----

TEST(Safetensors, RoundTripFloatAndIntegerTypes) {
  TempFolder dir;
  const std::vector<float> values = {1.0f, -2.5f, 0.375f, 1024.0f, -0.0f, 3.0f};  // exact in fp32, bf16 and fp16
  std::vector<uint16_t> as_bf16(6), as_f16(6);
  convert_from_f32(DType::BF16, values.data(), as_bf16.data(), 6);
  convert_from_f32(DType::F16, values.data(), as_f16.data(), 6);
  const std::vector<int64_t> ids = {0, -1, int64_t{1} << 40, 7};
  const std::string path = dir.file("model.safetensors");
  write_safetensors(path, {{"w.f32", DType::F32, {2, 3}, values.data(), 24},
                           {"w.bf16", DType::BF16, {3, 2}, as_bf16.data(), 12},
                           {"w.f16", DType::F16, {6}, as_f16.data(), 12},
                           {"ids", DType::I64, {4}, ids.data(), 32}});
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  const SafetensorsFile file = SafetensorsFile::open(path);
  EXPECT_EQ(file.path(), path);
  ASSERT_EQ(file.tensors().size(), 4u);
  const char* order[] = {"w.f32", "w.bf16", "w.f16", "ids"};
  for (int i = 0; i < 4; ++i) EXPECT_EQ(file.tensors()[i].name, order[i]);  // header order is write order

  const TensorEntry* f32 = file.find("w.f32");
  ASSERT_NE(f32, nullptr);
  EXPECT_EQ(f32->dtype, DType::F32);
  EXPECT_EQ(f32->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(f32->numel(), 6);
  EXPECT_EQ(f32->nbytes, 24u);
  for (const char* name : {"w.f32", "w.bf16", "w.f16"}) {
    std::vector<float> back(6);
    read_as_f32(*file.find(name), back.data());
    for (int i = 0; i < 6; ++i) EXPECT_EQ(std::memcmp(&back[i], &values[i], 4), 0) << name << "[" << i << "]";
  }
  const TensorEntry* id_entry = file.find("ids");
  ASSERT_NE(id_entry, nullptr);
  EXPECT_EQ(id_entry->dtype, DType::I64);
  ASSERT_EQ(id_entry->nbytes, 32u);
  EXPECT_EQ(std::memcmp(id_entry->data, ids.data(), 32), 0);
  EXPECT_EQ(file.find("absent"), nullptr);
}

TEST(Safetensors, HeaderIsPaddedToMultipleOfEight) {
  TempFolder dir;
  const float value = 1.0f;
  const std::string path = dir.file("one.safetensors");
  write_safetensors(path, {{"x", DType::F32, {1}, &value, 4}});
  const std::string bytes = read_bytes(path);
  uint64_t header_size = 0;
  for (int i = 0; i < 8; ++i) header_size |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  EXPECT_EQ(header_size % 8, 0u);
  EXPECT_EQ(bytes.size(), 8 + header_size + 4);
  EXPECT_EQ(bytes[8], '{');
}

TEST(Safetensors, MetadataRoundTrip) {
  TempFolder dir;
  const std::string path = dir.file("meta.safetensors");
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"step", "1200"}, {"note", "a \"quoted\" note"}};
  write_safetensors(path, {}, metadata);
  const SafetensorsFile file = SafetensorsFile::open(path);
  EXPECT_EQ(file.metadata(), metadata);
  EXPECT_TRUE(file.tensors().empty());
}

TEST(Safetensors, ZeroSizeTensors) {
  TempFolder dir;
  const float values[2] = {4.0f, 5.0f};
  const std::string mixed = dir.file("mixed.safetensors");
  write_safetensors(mixed, {{"empty", DType::F32, {0, 4}, nullptr, 0}, {"x", DType::F32, {2}, values, 8}});
  const SafetensorsFile file = SafetensorsFile::open(mixed);
  EXPECT_EQ(file.find("empty")->numel(), 0);
  EXPECT_EQ(file.find("empty")->nbytes, 0u);
  float back[2];
  read_as_f32(*file.find("x"), back);
  EXPECT_EQ(back[1], 5.0f);

  const std::string only_empty = dir.file("only_empty.safetensors");  // empty data section
  write_safetensors(only_empty, {{"a", DType::BF16, {3, 0}, nullptr, 0}, {"b", DType::I64, {0}, nullptr, 0}});
  const SafetensorsFile empty_file = SafetensorsFile::open(only_empty);
  ASSERT_EQ(empty_file.tensors().size(), 2u);
  read_as_f32(*empty_file.find("a"), nullptr);  // zero elements: nothing written
}

TEST(Safetensors, MovedFileKeepsItsData) {
  TempFolder dir;
  const float value = 9.0f;
  const std::string path = dir.file("m.safetensors");
  write_safetensors(path, {{"x", DType::F32, {1}, &value, 4}});
  SafetensorsFile first = SafetensorsFile::open(path);
  const TensorEntry* entry = first.find("x");
  SafetensorsFile second = std::move(first);
  EXPECT_EQ(second.find("x"), entry);
  float back = 0;
  read_as_f32(*entry, &back);
  EXPECT_EQ(back, 9.0f);
}

TEST(Safetensors, ReadAsF32RejectsIntegerTensor) {
  TempFolder dir;
  const int32_t ids[2] = {1, 2};
  const std::string path = dir.file("ids.safetensors");
  write_safetensors(path, {{"token_ids", DType::I32, {2}, ids, 8}});
  const SafetensorsFile file = SafetensorsFile::open(path);
  float out[2];
  try {
    read_as_f32(*file.find("token_ids"), out);
    ADD_FAILURE() << "read_as_f32 accepted I32";
  } catch (const Error& error) {
    EXPECT_CONTAINS(error.what(), "'token_ids'");
    EXPECT_CONTAINS(error.what(), "I32");
  }
}

// ---- writer validation ----

TEST(Safetensors, WriteRejectsBadTensorsAndCreatesNothing) {
  TempFolder dir;
  const float values[4] = {};
  const std::string path = dir.file("w.safetensors");
  EXPECT_THROW(write_safetensors(path, {{"x", DType::F32, {2, 2}, values, 12}}), Error);  // 12 != 16
  EXPECT_THROW(write_safetensors(path, {{"x", DType::F32, {1}, values, 4}, {"x", DType::F32, {1}, values, 4}}), Error);
  EXPECT_THROW(write_safetensors(path, {{"x", DType::F32, {-1}, values, 4}}), Error);
  EXPECT_THROW(write_safetensors(path, {{"__metadata__", DType::F32, {1}, values, 4}}), Error);
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

TEST(Safetensors, WriteReplacesExistingFile) {
  TempFolder dir;
  const float a = 1.0f, b[2] = {2.0f, 3.0f};
  const std::string path = dir.file("r.safetensors");
  write_safetensors(path, {{"a", DType::F32, {1}, &a, 4}});
  write_safetensors(path, {{"b", DType::F32, {2}, b, 8}});
  const SafetensorsFile file = SafetensorsFile::open(path);
  EXPECT_EQ(file.find("a"), nullptr);
  ASSERT_NE(file.find("b"), nullptr);
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

// ---- hostile files: one broken rule each ----

TEST(Safetensors, MissingFile) {
  TempFolder dir;
  const std::string path = dir.file("nope.safetensors");
  EXPECT_CONTAINS(open_error(path), path);
}

TEST(Safetensors, FileShorterThanEightBytes) {
  TempFolder dir;
  const std::string path = dir.file("short.safetensors");
  write_bytes(path, std::string("\x02\0\0\0", 4));
  EXPECT_CONTAINS(open_error(path), path);
  write_bytes(path, "");
  EXPECT_CONTAINS(open_error(path), path);
}

TEST(Safetensors, HeaderLengthBeyondFile) {
  TempFolder dir;
  const std::string path = dir.file("long.safetensors");
  write_bytes(path, length_prefix(64) + "{}");
  EXPECT_CONTAINS(open_error(path), path);
}

TEST(Safetensors, HeaderLengthAbsurd) {
  TempFolder dir;
  const std::string path = dir.file("absurd.safetensors");
  write_bytes(path, length_prefix(uint64_t{1} << 62) + "{}");
  const std::string message = open_error(path);
  EXPECT_CONTAINS(message, path);
  EXPECT_CONTAINS(message, "100 MB");
}

TEST(Safetensors, HeaderNotJson) {
  TempFolder dir;
  expect_bad_header(dir, "{\"a\": {\"dtype\": ", 0, "", "not valid JSON");
  expect_bad_header(dir, "", 0, "", "not valid JSON");
  expect_bad_header(dir, std::string("{\"\xff\": 1}"), 0, "", "not valid JSON");  // invalid UTF-8
}

TEST(Safetensors, HeaderNotObject) {
  TempFolder dir;
  expect_bad_header(dir, "[1, 2]   ", 0, "", "JSON object");
}

TEST(Safetensors, DuplicateTensorKey) {
  TempFolder dir;
  expect_bad_header(dir,
                    R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                    R"("w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                    8, "w", "twice");
}

TEST(Safetensors, DuplicateKeyInsideEntry) {
  TempFolder dir;
  expect_bad_header(dir, R"({"w":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}})", 4, "dtype", "twice");
}

TEST(Safetensors, EntryNotAnObject) {
  TempFolder dir;
  expect_bad_header(dir, R"({"w":[0,4]})", 4, "w", "exactly the keys");
}

TEST(Safetensors, EntryWithExtraOrMissingKey) {
  TempFolder dir;
  expect_bad_header(dir, R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}})", 4, "w", "exactly the keys");
  expect_bad_header(dir, R"({"w":{"dtype":"F32","shape":[1]}})", 4, "w", "exactly the keys");
}

TEST(Safetensors, UnknownDtype) {
  TempFolder dir;
  expect_bad_header(dir, R"({"w":{"dtype":"F8_E9","shape":[1],"data_offsets":[0,1]}})", 1, "w", "unknown dtype");
  expect_bad_header(dir, R"({"w":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", 4, "w", "unknown dtype");
}

TEST(Safetensors, BadShape) {
  TempFolder dir;
  expect_bad_header(dir, R"({"w":{"dtype":"F32","shape":4,"data_offsets":[0,16]}})", 16, "w", "shape");
  expect_bad_header(dir, R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4, "w", "shape");
  expect_bad_header(dir, R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", 4, "w", "shape");
  expect_bad_header(dir, R"({"w":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}})", 8, "w", "shape");
}

TEST(Safetensors, BadDataOffsets) {
  TempFolder dir;
  expect_bad_header(dir, R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4]}})", 4, "w", "data_offsets");
  expect_bad_header(dir, R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}})", 8, "w", "data_offsets");
  expect_bad_header(dir, R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", 4, "w", "data_offsets");
  expect_bad_header(dir, R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", 8, "w", "begin <= end");
  expect_bad_header(dir, R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0.0,4]}})", 4, "w", "data_offsets");
}

TEST(Safetensors, SizeDoesNotMatchShape) {
  TempFolder dir;
  expect_bad_header(dir, R"({"w":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,8]}})", 8, "w", "needs 12");
}

TEST(Safetensors, ElementCountOverflows) {
  TempFolder dir;
  // numel = 2^62 * 2^62 overflows; and numel = 2^62 fits but 2^62 * 4 bytes does not.
  expect_bad_header(dir, R"({"w":{"dtype":"U8","shape":[4611686018427387904,4611686018427387904],"data_offsets":[0,0]}})",
                    0, "w", "overflow");
  expect_bad_header(dir, R"({"w":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})", 0, "w",
                    "overflow");
  expect_bad_header(dir, R"({"w":{"dtype":"F32","shape":[1,0,18446744073709551615],"data_offsets":[0,0]}})", 0, "w",
                    "shape");
}

TEST(Safetensors, OffsetsOutsideDataSection) {
  TempFolder dir;
  expect_bad_header(dir, R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4, "w", "outside");
  expect_bad_header(dir, R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[18446744073709551612,18446744073709551615]}})",
                    0, "w", "data_offsets");
}

TEST(Safetensors, OverlappingTensors) {
  TempFolder dir;
  expect_bad_header(dir,
                    R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                    R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                    8, "b", "overlap tensor 'a'");
}

TEST(Safetensors, HoleInDataSection) {
  TempFolder dir;
  expect_bad_header(dir,
                    R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                    R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                    12, "b", "belong to no tensor");
}

TEST(Safetensors, TrailingBytesAfterLastTensor) {
  TempFolder dir;
  expect_bad_header(dir, R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 8, "", "belong to no tensor");
}

TEST(Safetensors, BadMetadata) {
  TempFolder dir;
  expect_bad_header(dir, R"({"__metadata__":{"step":1}})", 0, "step", "__metadata__");
  expect_bad_header(dir, R"({"__metadata__":["a"]})", 0, "", "__metadata__");
  expect_bad_header(dir, R"({"__metadata__":{"a":{"b":"c"}}})", 0, "a", "__metadata__");
}

TEST(Safetensors, TruncatedFile) {
  TempFolder dir;
  const std::vector<float> values(16, 1.0f);
  const std::string good = dir.file("good.safetensors");
  write_safetensors(good, {{"a", DType::F32, {8}, values.data(), 32}, {"b", DType::F32, {8}, values.data(), 32}});
  const std::string bytes = read_bytes(good);
  const std::string path = dir.file("cut.safetensors");
  for (size_t keep : {bytes.size() - 1, bytes.size() - 33, size_t{20}, size_t{9}}) {
    write_bytes(path, bytes.substr(0, keep));
    EXPECT_CONTAINS(open_error(path), path);
  }
}

// ---- checkpoint folders ----

// Writes shard `file` in `dir` holding the given tensors (each 2 floats: {k, k + 0.5}).
void write_shard(const TempFolder& dir, const std::string& file, const std::vector<std::string>& names) {
  std::vector<std::vector<float>> storage;
  std::vector<TensorToWrite> tensors;
  for (const std::string& name : names) {
    const float k = static_cast<float>(name.size());
    storage.push_back({k, k + 0.5f});
  }
  for (size_t i = 0; i < names.size(); ++i) tensors.push_back({names[i], DType::F32, {2}, storage[i].data(), 8});
  write_safetensors(dir.file(file), tensors);
}

void write_index(const TempFolder& dir, const std::string& weight_map_json) {
  write_bytes(dir.file("model.safetensors.index.json"),
              R"({"metadata": {"total_size": 24}, "weight_map": )" + weight_map_json + "}");
}

TEST(Safetensors, ShardedCheckpoint) {
  TempFolder dir;
  write_shard(dir, "model-00001-of-00002.safetensors", {"embed", "layer.0.w"});
  write_shard(dir, "model-00002-of-00002.safetensors", {"head"});
  write_index(dir, R"({"embed": "model-00001-of-00002.safetensors", "layer.0.w": "model-00001-of-00002.safetensors",
                      "head": "./model-00002-of-00002.safetensors"})");
  const SafetensorsCheckpoint checkpoint = SafetensorsCheckpoint::open(dir.path());
  EXPECT_EQ(checkpoint.names(), (std::vector<std::string>{"embed", "head", "layer.0.w"}));
  ASSERT_NE(checkpoint.find("head"), nullptr);
  EXPECT_EQ(checkpoint.find("missing"), nullptr);
  float values[2];
  read_as_f32(*checkpoint.find("layer.0.w"), values);
  EXPECT_EQ(values[0], 9.0f);
  EXPECT_EQ(values[1], 9.5f);
  EXPECT_CONTAINS(checkpoint.file_of("head"), "model-00002-of-00002.safetensors");
  EXPECT_CONTAINS(checkpoint.file_of("embed"), "model-00001-of-00002.safetensors");
  EXPECT_THROW(checkpoint.file_of("missing"), Error);
}

TEST(Safetensors, SingleFileCheckpoint) {
  TempFolder dir;
  write_shard(dir, "model.safetensors", {"b", "a"});
  const SafetensorsCheckpoint checkpoint = SafetensorsCheckpoint::open(dir.path());
  EXPECT_EQ(checkpoint.names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(checkpoint.file_of("a"), dir.file("model.safetensors"));
}

TEST(Safetensors, CheckpointFolderWithoutModel) {
  TempFolder dir;
  const std::string message = checkpoint_error(dir.path());
  EXPECT_CONTAINS(message, dir.path());
  EXPECT_CONTAINS(message, "neither");
  EXPECT_CONTAINS(checkpoint_error(dir.file("no_such_folder")), "no_such_folder");
}

TEST(Safetensors, IndexNamesMissingShard) {
  TempFolder dir;
  write_shard(dir, "a.safetensors", {"x"});
  write_index(dir, R"({"x": "a.safetensors", "y": "gone.safetensors"})");
  const std::string message = checkpoint_error(dir.path());
  EXPECT_CONTAINS(message, "model.safetensors.index.json");
  EXPECT_CONTAINS(message, "gone.safetensors");
  EXPECT_CONTAINS(message, "'y'");
}

TEST(Safetensors, TensorInTwoShards) {
  TempFolder dir;
  write_shard(dir, "a.safetensors", {"x", "shared"});
  write_shard(dir, "b.safetensors", {"y", "shared"});
  write_index(dir, R"({"x": "a.safetensors", "y": "b.safetensors", "shared": "a.safetensors"})");
  const std::string message = checkpoint_error(dir.path());
  EXPECT_CONTAINS(message, "'shared'");
  EXPECT_CONTAINS(message, "a.safetensors");
  EXPECT_CONTAINS(message, "b.safetensors");
}

TEST(Safetensors, ShardTensorMissingFromIndex) {
  TempFolder dir;
  write_shard(dir, "a.safetensors", {"x", "stray"});
  write_index(dir, R"({"x": "a.safetensors"})");
  const std::string message = checkpoint_error(dir.path());
  EXPECT_CONTAINS(message, "'stray'");
  EXPECT_CONTAINS(message, "a.safetensors");
  EXPECT_CONTAINS(message, "model.safetensors.index.json");
}

TEST(Safetensors, IndexMapsTensorToWrongShard) {
  TempFolder dir;
  write_shard(dir, "a.safetensors", {"x"});
  write_shard(dir, "b.safetensors", {"y"});
  write_index(dir, R"({"x": "b.safetensors", "y": "b.safetensors"})");  // a.safetensors never named
  std::string message = checkpoint_error(dir.path());
  EXPECT_CONTAINS(message, "'x'");
  EXPECT_CONTAINS(message, "b.safetensors");
  EXPECT_CONTAINS(message, "model.safetensors.index.json");

  write_index(dir, R"({"x": "b.safetensors", "y": "a.safetensors"})");  // both named, swapped
  message = checkpoint_error(dir.path());
  EXPECT_CONTAINS(message, "'x'");
  EXPECT_CONTAINS(message, "a.safetensors");
  EXPECT_CONTAINS(message, "b.safetensors");
}

TEST(Safetensors, MalformedIndex) {
  TempFolder dir;
  write_shard(dir, "a.safetensors", {"x"});
  const std::string index = dir.file("model.safetensors.index.json");
  for (const std::string& text : {std::string("{\"weight_map\": "), std::string("[]"), std::string("{\"metadata\": {}}"),
                                  std::string(R"({"weight_map": {"x": 3}})"),
                                  std::string(R"({"weight_map": {"x": "a.safetensors", "x": "a.safetensors"}})")}) {
    write_bytes(index, text);
    EXPECT_CONTAINS(checkpoint_error(dir.path()), index);
  }
}

TEST(Safetensors, BrokenShardIsNamed) {
  TempFolder dir;
  write_raw(dir.file("a.safetensors"), R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,8]}})", 8);
  write_index(dir, R"({"x": "a.safetensors"})");
  const std::string message = checkpoint_error(dir.path());
  EXPECT_CONTAINS(message, "a.safetensors");
  EXPECT_CONTAINS(message, "'x'");
}

}  // namespace
}  // namespace moetune
