// Why: the tokens a Hugging Face tokenizer holds by name (bos_token, eos_token, ..., and model-specific "*_token"
// names) are what apply_chat_template hands the chat template ({{ bos_token }}, {{ eos_token }}), the eos TRL appends
// and the pad it pads with, and, for a tokenizer.model folder, tokens the converted tokenizer adds. A folder may leave
// one out of its files and still have it (LlamaTokenizer's "<s>"), or have it overridden by special_tokens_map.json;
// reading tokenizer_config.json alone renders a different text than the model was tuned on. This reproduces how
// Transformers 5.17 (AutoTokenizer.from_pretrained, then tokenizer.special_tokens_map) arrives at them, for
// tokenizer.json and tokenizer.model folders alike (tests/fixtures/chat/special_tokens.json pins each rule):
//
//  1. Files. tokenizer_config.json's keys; special_tokens_map.json is read only when tokenizer_config.json has no
//     "added_tokens_decoder", and then each of its keys replaces tokenizer_config.json's (a null too).
//  2. A key present after 1 decides: a string, an AddedToken object (in tokenizer_config.json only with "__type":
//     "AddedToken", which Transformers needs there; in special_tokens_map.json any {"content": ...}), or null: none.
//  3. A key absent: the default of the class AutoTokenizer picks (tokenizer_class below; "...Fast" is the class):
//       LlamaTokenizer      bos "<s>", eos "</s>", unk "<unk>"
//       Qwen2Tokenizer      eos, unk, pad "<|endoftext|>"; bos none
//       GPTNeoXTokenizer    bos, eos, unk "<|endoftext|>", pad "<|padding|>"
//       GPT2Tokenizer       bos, eos, unk "<|endoftext|>"; pad none
//       TokenizersBackend   (also PreTrainedTokenizer(Fast)) over tokenizer.json: none; over a converted
//                           tokenizer.model: bos, eos, unk = the model's own pieces for them, where it has them
//     then pad_token, where neither the files nor the class give it, is tokenizer.json's padding.pad_token.
//     Another class: its defaults are not known here, so a tokenizer.json folder whose files leave out bos, eos, unk
//     or pad_token is refused (the error names the class and the key; setting the key, null for none, settles it).
//     sep, cls and mask have no default in the classes above.
//  4. Every other key ending in "_token" whose value is a string or an AddedToken object, and each entry of a dict
//     "extra_special_tokens", is a named token too (e.g. "image_token").
// The template sees each named token that is set, as its content; one that is not set is undefined there ("").
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace moetune::tokenizer {

// The JSON files beside a folder's tokenizer; a file that is absent reads as {}. The paths name the files in errors.
struct FolderFiles {
  std::string path;
  std::string config_path;  // tokenizer_config.json
  nlohmann::ordered_json config;
  std::string model_config_path;  // config.json
  nlohmann::ordered_json model_config;
  std::string map_path;  // special_tokens_map.json
  nlohmann::ordered_json map;

  static FolderFiles read(const std::string& folder);
};

// AutoTokenizer's class for the folder (tokenizer_config.json's tokenizer_class, config.json's tokenizer_class and
// model_type; see sentencepiece_conversion.h "Class"), without "Fast". `name` is empty when config.json's model_type
// is one moetune has no class for; `where` says which file and field decided, for errors. auto_map is an error.
struct TokenizerClass {
  std::string name;
  std::string where;
};
TokenizerClass tokenizer_class(const FolderFiles& files);

// One token value Transformers reads: a string, or an AddedToken.
struct TokenValue {
  std::string content;
  bool single_word = false, lstrip = false, rstrip = false, special = false;
  std::optional<bool> normalized;  // not given: the opposite of `special` (tokenizers' AddedToken)
  bool text = false;               // written as a string (Python compares it with other strings only)
  std::string where;               // its source, for errors
};

// A token written as a string: Transformers makes it AddedToken(token, special=True).
TokenValue string_token(std::string content, std::string where);
// An AddedToken written as an object {"content": ..., "lstrip": ..., ...}; `typed`: it must carry "__type":
// "AddedToken" (a token value of tokenizer_config.json).
TokenValue object_token(const nlohmann::ordered_json& value, const std::string& where, bool typed);
// A token value of tokenizer_config.json: a string, an AddedToken object, or null (nullopt).
std::optional<TokenValue> token_value(const nlohmann::ordered_json& value, const std::string& where);

// A class's defaults, in its order: key -> content, or nullopt where the class passes None (rule 3).
using TokenDefaults = std::vector<std::pair<std::string, std::optional<std::string>>>;
// The defaults of a class of rule 3's table over a tokenizer.json ("LlamaTokenizer", ...); nullopt for another class.
std::optional<TokenDefaults> class_defaults(const std::string& class_name);

// Named tokens in Transformers' order: the seven standard ones (bos, eos, unk, sep, pad, cls, mask) that the files or
// `defaults` mention (nullopt: none), then the model-specific ones (rule 4): AddedToken objects first, then strings.
using NamedTokens = std::vector<std::pair<std::string, std::optional<TokenValue>>>;
NamedTokens named_tokens(const FolderFiles& files, const TokenDefaults& defaults);

// The named tokens of a folder whose tokenizer is `tokenizer_json` (its tokenizer.json document, for the padding).
NamedTokens json_folder_tokens(const FolderFiles& files, const nlohmann::json& tokenizer_json);

// Each named token that is set, key -> content, in order: Transformers' tokenizer.special_tokens_map.
std::vector<std::pair<std::string, std::string>> set_tokens(const NamedTokens& named);

}  // namespace moetune::tokenizer
