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

#include "tokenizer/tokenizer.h"

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

// A fixture folder's expected.json, for tests parameterised by fixture name.
class ExpectedIdsFixture : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    folder_ = fixtures_dir() + "/" + GetParam();
    expected_ = read_json(folder_ + "/expected.json");
  }
  std::string folder_;
  nlohmann::json expected_;
};

constexpr int kMaxReported = 8;  // mismatches printed per test; the count of all of them is printed too

// expected["cases"]: hand-written texts with the reference's ids (without and with special tokens) and decodes (with
// and without special tokens). Reports each mismatch (up to kMaxReported) naming `reference` ("HF", "sp"); returns
// how many cases differ.
inline int hand_written_case_failures(const Tokenizer& tok, const nlohmann::json& expected, const std::string& label,
                                      const std::string& reference) {
  int failures = 0;
  for (const auto& c : expected.at("cases")) {
    std::string text = c.contains("hex") ? from_hex(c.at("hex")) : c.at("text").get<std::string>();
    auto want = c.at("ids").get<std::vector<int32_t>>();
    auto want_special = c.at("ids_with_special").get<std::vector<int32_t>>();
    auto got = tok.encode(text);
    auto got_special = tok.encode(text, /*add_special_tokens=*/true);
    std::string decoded = tok.decode(want), decoded_skip = tok.decode(want, /*skip_special_tokens=*/true);
    bool ok = got == want && got_special == want_special && decoded == c.at("decoded").get<std::string>() &&
              decoded_skip == c.at("decoded_skip_special").get<std::string>();
    if (!ok && ++failures <= kMaxReported) {
      ADD_FAILURE() << label << " text " << describe(text) << "\n  ids      " << reference << " " << ids_string(want)
                    << "\n           us " << ids_string(got) << "\n  special  " << reference << " "
                    << ids_string(want_special) << "\n           us " << ids_string(got_special) << "\n  decode   "
                    << reference << " " << describe(c.at("decoded")) << "\n           us " << describe(decoded)
                    << "\n  skip     " << reference << " " << describe(c.at("decoded_skip_special"))
                    << "\n           us " << describe(decoded_skip);
    }
  }
  return failures;
}

// expected["vocab_size"], ["token_to_id"] and ["id_to_token"] (samples of the reference's vocabulary) hold for tok.
inline void expect_vocabulary_matches(const Tokenizer& tok, const nlohmann::json& expected) {
  EXPECT_EQ(tok.vocab_size(), expected.at("vocab_size").get<int>());
  for (const auto& [token, id] : expected.at("token_to_id").items()) {
    EXPECT_EQ(tok.token_to_id(token), id.get<int32_t>()) << token;
  }
  for (const auto& [id, token] : expected.at("id_to_token").items()) {
    EXPECT_EQ(tok.id_to_token(std::stoi(id)), token.get<std::string>()) << id;
  }
}

// expected["decode"]: random id sequences and the reference's decodes (with and without special tokens). Returns how
// many differ, reporting them as above.
inline int decode_failures(const Tokenizer& tok, const nlohmann::json& expected, const std::string& label,
                           const std::string& reference) {
  int failures = 0;
  for (const auto& d : expected.at("decode")) {
    auto ids = d.at("ids").get<std::vector<int32_t>>();
    std::string got = tok.decode(ids), got_skip = tok.decode(ids, /*skip_special_tokens=*/true);
    if ((got != d.at("decoded").get<std::string>() || got_skip != d.at("decoded_skip_special").get<std::string>()) &&
        ++failures <= kMaxReported) {
      ADD_FAILURE() << label << " ids " << ids_string(ids) << "\n  decode " << reference << " "
                    << describe(d.at("decoded")) << "\n         us " << describe(got) << "\n  skip   " << reference
                    << " " << describe(d.at("decoded_skip_special")) << "\n         us " << describe(got_skip);
    }
  }
  return failures;
}

}  // namespace moetune::tokenizer_test
