// Why: the bad-input, round-trip and CLI tests all need the same few things: a fresh temporary folder per test, a copy of
// a golden checkpoint to corrupt, a way to rewrite one tensor of a safetensors file, the message of the moetune::Error a
// call throws, and a child process with its exit status and stderr. Header-only, in its own namespace, so each test file
// stays self-contained.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/safetensors.h"

namespace moetune::test_util {

namespace fs = std::filesystem;

// The test binary may run from a copy of the tree elsewhere (the GPU machine): MOETUNE_SOURCE_DIR overrides.
inline std::string source_dir() {
  const char* root = std::getenv("MOETUNE_SOURCE_DIR");
  return root ? root : MOETUNE_SOURCE_DIR;
}
// The moetune CLI under test; MOETUNE_CLI overrides (binaries copied to another folder on the GPU machine).
inline std::string cli_path() {
  const char* path = std::getenv("MOETUNE_CLI");
  return path ? path : MOETUNE_CLI_PATH;
}
inline std::string golden_folder(const std::string& family) { return source_dir() + "/tests/golden/" + family; }
inline const std::vector<std::string>& golden_families() {
  static const std::vector<std::string> families = {"qwen3_moe", "mixtral", "olmoe", "qwen2_moe"};
  return families;
}

// A fresh folder per test (named after the test), removed afterwards.
class TempFolder {
 public:
  TempFolder() {
    static int counter = 0;
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = test ? std::string(test->test_suite_name()) + "_" + test->name() : "none";
    for (char& c : name)
      if (c == '/') c = '_';
    path_ = fs::path(::testing::TempDir()) /
            ("moetune_" + name + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempFolder() {
    std::error_code error;
    fs::remove_all(path_, error);
  }
  TempFolder(const TempFolder&) = delete;
  TempFolder& operator=(const TempFolder&) = delete;

  std::string path() const { return path_.string(); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  ASSERT_TRUE(out.good()) << path;
}

inline nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(read_text(path)); }
inline void write_json(const std::string& path, const nlohmann::json& value) { write_text(path, value.dump(2) + "\n"); }

// Copies tests/golden/<family> (files only: config.json, model.safetensors, ...) into `destination`.
inline std::string copy_golden(const std::string& family, const std::string& destination) {
  fs::create_directories(destination);
  for (const auto& entry : fs::directory_iterator(golden_folder(family)))
    if (entry.is_regular_file()) fs::copy_file(entry.path(), fs::path(destination) / entry.path().filename());
  return destination;
}

// Rewrites the safetensors file at `path` (in place), keeping its metadata: `edit` sees every tensor and may change its
// name, dtype, shape or drop it (return false); `extra` tensors are appended. The data bytes are kept as they are.
inline void rewrite_safetensors(const std::string& path, const std::function<bool(TensorToWrite&)>& edit,
                                const std::vector<TensorToWrite>& extra = {}) {
  std::vector<std::vector<unsigned char>> copies;
  std::vector<TensorToWrite> tensors;
  std::map<std::string, std::string> metadata;
  {
    const SafetensorsFile file = SafetensorsFile::open(path);
    metadata = file.metadata();
    copies.reserve(file.tensors().size());
    for (const TensorEntry& entry : file.tensors()) {
      copies.emplace_back(entry.data, entry.data + entry.nbytes);
      TensorToWrite tensor{entry.name, entry.dtype, entry.shape, copies.back().data(), copies.back().size()};
      if (edit(tensor)) tensors.push_back(tensor);
    }
  }
  tensors.insert(tensors.end(), extra.begin(), extra.end());
  write_safetensors(path, tensors, metadata);
}

// Tensor names of a safetensors file, sorted.
inline std::vector<std::string> tensor_names(const std::string& path) {
  std::vector<std::string> names;
  const SafetensorsFile file = SafetensorsFile::open(path);
  for (const TensorEntry& entry : file.tensors()) names.push_back(entry.name);
  std::sort(names.begin(), names.end());
  return names;
}

// The message of the moetune::Error that `call` throws; a test failure if it throws nothing (or something else), or if
// the message spans several lines.
inline std::string error_of(const std::function<void()>& call) {
  try {
    call();
  } catch (const Error& error) {
    const std::string message = error.what();
    EXPECT_EQ(message.find('\n'), std::string::npos) << "multi-line error: " << message;
    return message;
  } catch (const std::exception& error) {
    ADD_FAILURE() << "threw a non-moetune exception: " << error.what();
    return "";
  }
  ADD_FAILURE() << "did not throw";
  return "";
}

// Every part must occur in the message.
#define EXPECT_MESSAGE_HAS(message, ...)                                                     \
  do {                                                                                       \
    const std::string mt_message_ = (message);                                               \
    for (const std::string& mt_part_ : std::initializer_list<std::string>{__VA_ARGS__})      \
      EXPECT_NE(mt_message_.find(mt_part_), std::string::npos)                               \
          << "message does not name \"" << mt_part_ << "\": " << mt_message_;                \
  } while (0)

// Folders under `folder` whose name contains ".tmp-" or ".old-" (left-overs of an interrupted atomic save).
inline std::vector<std::string> staging_leftovers(const std::string& folder) {
  std::vector<std::string> found;
  for (const auto& entry : fs::directory_iterator(folder)) {
    const std::string name = entry.path().filename().string();
    if (name.find(".tmp") != std::string::npos || name.find(".old-") != std::string::npos) found.push_back(name);
  }
  return found;
}

struct CommandResult {
  int status = -1;      // exit status (-1: did not exit normally)
  std::string out;      // stdout
  std::string err;      // stderr
};

// Runs `command` through /bin/sh with stdout and stderr captured in files of `scratch`.
inline CommandResult run_command(const std::string& command, const std::string& scratch) {
  static int counter = 0;
  const std::string out_path = scratch + "/cmd" + std::to_string(counter) + ".out";
  const std::string err_path = scratch + "/cmd" + std::to_string(counter++) + ".err";
  const std::string full = command + " >'" + out_path + "' 2>'" + err_path + "'";
  const int raw = std::system(full.c_str());
  CommandResult result;
  result.status = raw != -1 && WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  result.out = read_text(out_path);
  result.err = read_text(err_path);
  fs::remove(out_path);
  fs::remove(err_path);
  return result;
}

// `text` as one /bin/sh word (single-quoted, embedded single quotes escaped).
inline std::string quote(const std::string& text) {
  std::string quoted = "'";
  for (const char c : text) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

// Runs `moetune <arguments>` (cli_path()) with `folder` as the working directory.
inline CommandResult run_moetune(const std::string& folder, const std::string& arguments) {
  return run_command("cd " + quote(folder) + " && " + quote(cli_path()) + " " + arguments, folder);
}

// A command's status and output, for assertion messages.
inline std::string describe(const CommandResult& result) {
  return "exit " + std::to_string(result.status) + "\n--- stdout:\n" + result.out + "\n--- stderr:\n" + result.err;
}

// Non-empty lines of a text.
inline std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  size_t begin = 0;
  while (begin <= text.size()) {
    size_t end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(begin, end - begin);
    // A progress line rewritten with '\r' counts as its last state.
    if (const size_t cr = line.find_last_of('\r'); cr != std::string::npos) line = line.substr(cr + 1);
    if (!line.empty()) lines.push_back(line);
    begin = end + 1;
  }
  return lines;
}

}  // namespace moetune::test_util
