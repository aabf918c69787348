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
#include "tokenizer/special_tokens.h"

namespace moetune::tokenizer::spm_conversion {

// The Transformers tokenizer class a folder converts with.
enum class Backend { Llama, Generic };

// A tokenizer.model folder: its JSON files (special_tokens.h) and the model.
struct Folder : FolderFiles {
  std::string model_path;
  SentencePieceModel model;
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

// The named special tokens (special_tokens.h) with the backend's defaults: LlamaTokenizer's, or for the generic
// conversion the model's own bos, eos and unk pieces where it has them. special_tokens_map.json keys other than the
// seven standard ones and additional_special_tokens are refused (their place among the added tokens is not
// reproduced).
NamedTokens sentencepiece_named_tokens(const Folder& folder, Backend backend);

// `vocab`: the model's pieces -> ids.
AddedTokens added_tokens(const Folder& folder, Backend backend, const std::unordered_map<std::string, int64_t>& vocab);

}  // namespace moetune::tokenizer::spm_conversion
