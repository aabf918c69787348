// Why: see special_tokens.h.
#include "tokenizer/special_tokens.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "core/error.h"

namespace moetune::tokenizer {

namespace {

namespace fs = std::filesystem;
using ordered_json = nlohmann::ordered_json;

// Transformers' SPECIAL_TOKENS_ATTRIBUTES, in its order.
constexpr const char* kNamedKeys[] = {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token",
                                      "mask_token"};

bool is_named_key(const std::string& key) {
  return std::find(std::begin(kNamedKeys), std::end(kNamedKeys), key) != std::end(kNamedKeys);
}

bool ends_with_token(const std::string& key) {
  return key.size() >= 6 && key.compare(key.size() - 6, 6, "_token") == 0;
}

// A JSON file that must hold an object; {} when the file does not exist.
ordered_json read_object(const std::string& path) {
  if (!fs::exists(path)) return ordered_json::object();
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, ": cannot open");
  std::ostringstream text;
  text << in.rdbuf();
  ordered_json value;
  try {
    value = ordered_json::parse(text.str());
  } catch (const nlohmann::json::parse_error& e) {
    fail(path, ": not valid JSON: ", e.what());
  }
  if (!value.is_object()) fail(path, ": not a JSON object");
  return value;
}

std::optional<std::string> class_name(const ordered_json& object, const std::string& where) {
  if (!object.contains("tokenizer_class") || object["tokenizer_class"].is_null()) return std::nullopt;
  if (!object["tokenizer_class"].is_string()) fail(where, ": \"tokenizer_class\" must be a string");
  std::string name = object["tokenizer_class"].get<std::string>();
  if (name.size() > 4 && name.compare(name.size() - 4, 4, "Fast") == 0) name.resize(name.size() - 4);
  return name;
}

// tokenizer_config.json with special_tokens_map.json merged in (rule 1). A map entry that is an object becomes an
// AddedToken object (Transformers: AddedToken(**value, special=True)).
ordered_json merged_config(const FolderFiles& in) {
  ordered_json config = in.config;
  if (config.contains("added_tokens_decoder")) return config;
  for (const auto& [key, value] : in.map.items()) {
    if (key == "additional_special_tokens") continue;  // extra tokens, not named ones
    if (!is_named_key(key) && !ends_with_token(key)) {
      fail(in.map_path, ": \"", key, "\": moetune reads only \"*_token\" keys and additional_special_tokens here");
    }
    config[key] = value;
    if (value.is_object()) {
      config[key]["__type"] = "AddedToken";
      config[key]["special"] = true;
    }
  }
  return config;
}

}  // namespace

FolderFiles FolderFiles::read(const std::string& folder) {
  FolderFiles files;
  files.path = folder;
  files.config_path = (fs::path(folder) / "tokenizer_config.json").string();
  files.config = read_object(files.config_path);
  files.model_config_path = (fs::path(folder) / "config.json").string();
  files.model_config = read_object(files.model_config_path);
  files.map_path = (fs::path(folder) / "special_tokens_map.json").string();
  files.map = read_object(files.map_path);
  return files;
}

TokenizerClass tokenizer_class(const FolderFiles& in) {
  if (in.config.contains("auto_map") && !in.config["auto_map"].is_null()) {
    fail(in.config_path, ": \"auto_map\" makes Transformers load the model's own tokenizer code, which moetune cannot ",
         "run; give the folder a tokenizer.json and no auto_map");
  }
  // Transformers' class for config.json's model_type; "" where it maps to none.
  static const std::map<std::string, std::string> kMapped = {
      {"llama", ""}, {"mistral", "TokenizersBackend"}, {"mixtral", "TokenizersBackend"},
      {"olmoe", "GPTNeoXTokenizer"}, {"qwen2_moe", "Qwen2Tokenizer"}, {"qwen3_moe", "Qwen2Tokenizer"}};
  std::optional<std::string> mapped;
  if (in.model_config.contains("model_type") && !in.model_config["model_type"].is_null()) {
    const ordered_json& value = in.model_config["model_type"];
    auto it = value.is_string() ? kMapped.find(value.get<std::string>()) : kMapped.end();
    if (it == kMapped.end()) return {"", in.model_config_path + ": model_type " + value.dump()};
    if (!it->second.empty()) mapped = it->second;
  }
  const std::string type = in.model_config.contains("model_type") ? in.model_config["model_type"].dump() : "";
  const std::optional<std::string> own = class_name(in.config, in.config_path);
  const std::optional<std::string> hub = own ? own : class_name(in.model_config, in.model_config_path);
  if (hub && mapped && *mapped != *hub) {
    return {*mapped == "TokenizersBackend" ? *mapped : *hub,
            in.model_config_path + ": model_type " + type + " with tokenizer_class \"" + *hub + "\""};
  }
  if (hub) return {*hub, (own ? in.config_path : in.model_config_path) + ": \"tokenizer_class\" \"" + *hub + "\""};
  if (mapped) return {*mapped, in.model_config_path + ": model_type " + type};
  return {"TokenizersBackend", in.config_path + ": no \"tokenizer_class\""};
}

TokenValue string_token(std::string content, std::string where) {
  TokenValue token;
  token.content = std::move(content);
  token.special = true;
  token.text = true;
  token.where = std::move(where);
  return token;
}

TokenValue object_token(const ordered_json& value, const std::string& where, bool typed) {
  if (!value.is_object()) fail(where, " must be an object, found ", value.dump());
  if (typed && value.value("__type", "") != "AddedToken") {
    fail(where, " is an object without \"__type\": \"AddedToken\", which Transformers cannot read as a token");
  }
  TokenValue token;
  token.where = where;
  for (const auto& [key, field] : value.items()) {
    if (key == "__type" && typed) continue;
    if (key == "content") {
      if (!field.is_string() || field.get<std::string>().empty()) {
        fail(where, ": \"content\" must be a non-empty string");
      }
      token.content = field.get<std::string>();
      continue;
    }
    bool* target = key == "single_word" ? &token.single_word
                   : key == "lstrip"    ? &token.lstrip
                   : key == "rstrip"    ? &token.rstrip
                   : key == "special"   ? &token.special
                                        : nullptr;
    if (!target && key != "normalized") fail(where, ": unknown AddedToken field \"", key, "\"");
    if (!field.is_boolean()) fail(where, ": \"", key, "\" must be true or false, found ", field.dump());
    if (target) *target = field.get<bool>();
    else token.normalized = field.get<bool>();
  }
  if (token.content.empty()) fail(where, " has no \"content\"");
  return token;
}

std::optional<TokenValue> token_value(const ordered_json& value, const std::string& where) {
  if (value.is_null()) return std::nullopt;
  if (value.is_string()) {
    if (value.get<std::string>().empty()) fail(where, " is empty");
    return string_token(value.get<std::string>(), where);
  }
  if (value.is_object()) return object_token(value, where, /*typed=*/true);
  fail(where, " must be a string, an AddedToken object or null, found ", value.dump());
}

std::optional<TokenDefaults> class_defaults(const std::string& name) {
  const std::string endoftext = "<|endoftext|>";
  if (name == "LlamaTokenizer") {
    return TokenDefaults{{"unk_token", "<unk>"}, {"bos_token", "<s>"}, {"eos_token", "</s>"}};
  }
  if (name == "Qwen2Tokenizer") {
    return TokenDefaults{
        {"unk_token", endoftext}, {"bos_token", std::nullopt}, {"eos_token", endoftext}, {"pad_token", endoftext}};
  }
  if (name == "GPTNeoXTokenizer") {
    return TokenDefaults{
        {"unk_token", endoftext}, {"bos_token", endoftext}, {"eos_token", endoftext}, {"pad_token", "<|padding|>"}};
  }
  if (name == "GPT2Tokenizer") {
    return TokenDefaults{
        {"unk_token", endoftext}, {"bos_token", endoftext}, {"eos_token", endoftext}, {"pad_token", std::nullopt}};
  }
  if (name == "TokenizersBackend" || name == "PreTrainedTokenizer") return TokenDefaults{};
  return std::nullopt;
}

NamedTokens named_tokens(const FolderFiles& in, const TokenDefaults& defaults) {
  const ordered_json config = merged_config(in);
  NamedTokens named;
  for (const char* key : kNamedKeys) {
    const std::string k = key, where = in.config_path + ": \"" + k + "\"";
    if (config.contains(k)) {
      named.emplace_back(k, token_value(config[k], where));
      continue;
    }
    auto given = std::find_if(defaults.begin(), defaults.end(), [&](const auto& d) { return d.first == k; });
    if (given == defaults.end()) continue;
    if (!given->second) named.emplace_back(k, std::nullopt);
    else named.emplace_back(k, string_token(*given->second, where + " (absent: the default " + *given->second + ")"));
  }
  NamedTokens objects, strings;
  for (const auto& [key, value] : config.items()) {
    if (is_named_key(key) || !ends_with_token(key)) continue;
    const std::string where = in.config_path + ": \"" + key + "\"";
    const bool typed = value.is_object() && value.value("__type", "") == "AddedToken";
    if (value.is_string()) strings.emplace_back(key, token_value(value, where));
    else if (typed) objects.emplace_back(key, token_value(value, where));
  }
  if (config.contains("extra_special_tokens") && config["extra_special_tokens"].is_object()) {
    for (const auto& [name, value] : config["extra_special_tokens"].items()) {
      const std::string where = in.config_path + ": \"extra_special_tokens\".\"" + name + "\"";
      if (!value.is_string()) fail(where, " must be a string");
      strings.emplace_back(name, token_value(value, where));
    }
  }
  for (NamedTokens* group : {&objects, &strings}) {
    for (auto& [key, token] : *group) {
      auto same = std::find_if(named.begin(), named.end(), [&](const auto& n) { return n.first == key; });
      if (same != named.end()) same->second = std::move(token);
      else named.emplace_back(key, std::move(token));
    }
  }
  return named;
}

NamedTokens json_folder_tokens(const FolderFiles& in, const nlohmann::json& tokenizer_json) {
  const TokenizerClass chosen = tokenizer_class(in);
  std::optional<TokenDefaults> defaults = class_defaults(chosen.name);
  if (!defaults) {
    const NamedTokens in_files = named_tokens(in, {});
    for (const char* key : {"bos_token", "eos_token", "unk_token", "pad_token"}) {
      if (std::none_of(in_files.begin(), in_files.end(), [&](const auto& n) { return n.first == key; })) {
        fail(chosen.where, " makes Transformers use ", chosen.name.empty() ? "a tokenizer class" : chosen.name,
             " whose default special tokens moetune does not know (it knows LlamaTokenizer, Qwen2Tokenizer, ",
             "GPTNeoXTokenizer, GPT2Tokenizer and PreTrainedTokenizerFast), and ", in.config_path, " leaves out \"",
             key, "\"; set it there (null for none)");
      }
    }
    return in_files;
  }
  const bool class_pads =
      std::any_of(defaults->begin(), defaults->end(), [](const auto& d) { return d.first == "pad_token"; });
  const auto padding = tokenizer_json.find("padding");
  if (!class_pads && padding != tokenizer_json.end() && padding->is_object()) {
    const auto pad = padding->find("pad_token");
    if (pad != padding->end() && pad->is_string()) defaults->emplace_back("pad_token", pad->get<std::string>());
  }
  return named_tokens(in, *defaults);
}

std::vector<std::pair<std::string, std::string>> set_tokens(const NamedTokens& named) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [key, token] : named) {
    if (token) out.emplace_back(key, token->content);
  }
  return out;
}

}  // namespace moetune::tokenizer
