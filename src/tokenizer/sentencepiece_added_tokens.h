// Why: the added tokens of a converted tokenizer.model (which ones, special or not, their stripping and normalization
// flags, their ids) come out of a chain of defaults, merges and duplicate checks in Transformers 5.17's tokenizer
// classes (tokenizer_config.json, special_tokens_map.json, the model's control and user-defined pieces); a token with
// the wrong flag changes ids or decodes. This reproduces that chain (the rules are in sentencepiece_conversion.h,
// "Added tokens"), for sentencepiece_conversion.cpp, with the folder's files it reads.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "tokenizer/sentencepiece_model.h"

namespace moetune::tokenizer::spm_conversion {

// The Transformers tokenizer class a folder converts with.
enum class Backend { Llama, Generic };

// A tokenizer.model folder; a JSON file that is absent reads as {}. The paths name the files in errors.
struct Folder {
  std::string path;
  std::string model_path;
  SentencePieceModel model;
  std::string config_path;  // tokenizer_config.json
  nlohmann::ordered_json config;
  std::string model_config_path;  // config.json
  nlohmann::ordered_json model_config;
  std::string map_path;  // special_tokens_map.json
  nlohmann::ordered_json map;
};

// A boolean option: true/false, or nullopt when absent or null; anything else is an error naming `where` and `key`.
std::optional<bool> flag(const nlohmann::ordered_json& object, const char* key, const std::string& where);

struct AddedToken {
  int64_t id = 0;
  std::string content;
  bool single_word = false, lstrip = false, rstrip = false, normalized = false, special = false;
  std::string where;  // its source, for errors
};

struct AddedTokens {
  std::vector<AddedToken> tokens;      // by id
  std::optional<AddedToken> bos, eos;  // the bos_token / eos_token, where there is one
};

// `vocab`: the model's pieces -> ids.
AddedTokens added_tokens(const Folder& folder, Backend backend, const std::unordered_map<std::string, int64_t>& vocab);

}  // namespace moetune::tokenizer::spm_conversion
