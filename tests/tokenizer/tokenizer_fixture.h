// Why: the tokenizer tests compare moetune with ids Hugging Face `tokenizers` wrote into tests/fixtures/tokenizer/
// (tools/tokenizer/make_fixtures.py). This header reads those files and prints a mismatch so that it can be
// reproduced in Python: the text as a JSON string (or its bytes in hex) and both id lists.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

namespace moetune::tokenizer_test {

inline std::string fixtures_dir() { return std::string(MOETUNE_SOURCE_DIR) + "/tests/fixtures/tokenizer"; }

inline const std::vector<std::string>& fixture_names() {
  static const std::vector<std::string> names = {"qwen2_bytelevel", "olmoe_bytelevel", "gpt2_prefix", "mixtral_spm",
                                                 "llama_metaspace"};
  return names;
}

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

inline nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(read_text(path)); }

inline std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  return out;
}

// A fixture text: a JSON string, or {"hex": "..."} for bytes that are not valid UTF-8.
inline std::string fixture_text(const nlohmann::json& entry) {
  return entry.is_string() ? entry.get<std::string>() : from_hex(entry.at("hex").get<std::string>());
}

inline std::string describe(const std::string& text) {
  std::string hex;
  static const char* digits = "0123456789abcdef";
  for (unsigned char c : text) {
    hex += digits[c >> 4];
    hex += digits[c & 15];
  }
  try {
    return nlohmann::json(text).dump() + " (hex " + hex + ")";
  } catch (const nlohmann::json::exception&) {
    return "bytes " + hex;
  }
}

inline std::string ids_string(const std::vector<int32_t>& ids) { return nlohmann::json(ids).dump(); }

}  // namespace moetune::tokenizer_test
