// Why: the dataset tests need model folders that hold both weights and a real tokenizer (a golden tiny model's config
// with its vocabulary widened to the fixture tokenizer's, random weights, and the tokenizer files of a chat fixture),
// and small JSONL files written on the spot.
#pragma once

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "api/model.h"
#include "model/config.h"
#include "tokenizer/tokenizer.h"

namespace moetune::dataset_test {

namespace fs = std::filesystem;

inline std::string chat_fixture(const std::string& family) {
  return std::string(MOETUNE_SOURCE_DIR) + "/tests/fixtures/chat/" + family;
}

// Copies the tokenizer files of tests/fixtures/chat/<family> into `folder`.
inline void copy_tokenizer(const std::string& family, const std::string& folder) {
  fs::create_directories(folder);
  for (const char* name : {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja"}) {
    const fs::path from = fs::path(chat_fixture(family)) / name;
    if (fs::exists(from)) fs::copy_file(from, fs::path(folder) / name, fs::copy_options::overwrite_existing);
  }
}

// A model folder: tests/golden/<golden>'s config with vocab_size covering the fixture tokenizer, random weights
// (seeded), and the tokenizer (and chat template) of tests/fixtures/chat/<family>.
inline std::string make_model(const std::string& family, const std::string& folder,
                              const std::string& golden = "qwen3_moe", uint64_t seed = 7) {
  std::ifstream in(std::string(MOETUNE_SOURCE_DIR) + "/tests/golden/" + golden + "/config.json");
  nlohmann::json config = nlohmann::json::parse(in);
  const int vocab = Tokenizer::from_folder(chat_fixture(family)).vocab_size();
  config["vocab_size"] = (vocab + 63) / 64 * 64;
  Model::from_config(parse_config(config, "test config"), seed).save_pretrained(folder);
  copy_tokenizer(family, folder);
  return folder;
}

inline void write_lines(const std::string& path, const std::vector<std::string>& lines) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  for (const std::string& line : lines) out << line << '\n';
}

inline std::string chat_line(const std::string& user, const std::string& assistant) {
  return nlohmann::json({{"messages",
                          {{{"role", "user"}, {"content", user}}, {{"role", "assistant"}, {"content", assistant}}}}})
      .dump();
}

// n chat records of varying length (deterministic).
inline std::vector<std::string> chat_lines(int n) {
  static const char* words[] = {"a", "be", "the", "do", "is", "it", "on", "we"};
  std::vector<std::string> lines;
  for (int i = 0; i < n; ++i) {
    std::string user = "Q" + std::to_string(i), answer = "A";
    for (int w = 0; w < 1 + (i * 7) % 9; ++w) user += std::string(" ") + words[(i + w) % 8];
    for (int w = 0; w < 1 + (i * 5) % 11; ++w) answer += std::string(" ") + words[(i * 3 + w) % 8];
    lines.push_back(chat_line(user, answer));
  }
  return lines;
}

}  // namespace moetune::dataset_test
