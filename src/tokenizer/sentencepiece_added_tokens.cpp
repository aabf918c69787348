// Why: see sentencepiece_added_tokens.h.
#include "tokenizer/sentencepiece_added_tokens.h"

#include <algorithm>
#include <utility>

#include "core/error.h"

namespace moetune::tokenizer::spm_conversion {

namespace {

using ordered_json = nlohmann::ordered_json;
using PieceType = SentencePieceModel::PieceType;

// Transformers' SPECIAL_TOKENS_ATTRIBUTES, in its order.
constexpr const char* kNamedKeys[] = {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token",
                                      "mask_token"};

bool is_named_key(const std::string& key) {
  return std::find(std::begin(kNamedKeys), std::end(kNamedKeys), key) != std::end(kNamedKeys);
}

// One token value Transformers hands to the backend: a string, or an AddedToken.
struct Entry {
  std::string content;
  bool single_word = false, lstrip = false, rstrip = false, special = false;
  std::optional<bool> normalized;  // not given: the opposite of `special` (tokenizers' AddedToken)
  bool text = false;               // written as a string (Python compares it with other strings only)
  std::string where;
};

// Python's `==` between two token values: strings by content, AddedTokens by every field.
bool same_value(const Entry& a, const Entry& b) {
  if (a.text || b.text) return a.text && b.text && a.content == b.content;
  return a.content == b.content && a.single_word == b.single_word && a.lstrip == b.lstrip && a.rstrip == b.rstrip &&
         a.special == b.special && a.normalized.value_or(!a.special) == b.normalized.value_or(!b.special);
}

// A token written as a string: Transformers makes it AddedToken(token, special=True).
Entry string_entry(std::string content, std::string where) {
  Entry entry;
  entry.content = std::move(content);
  entry.special = true;
  entry.text = true;
  entry.where = std::move(where);
  return entry;
}

// An AddedToken written as an object {"content": ..., "lstrip": ..., ...}; `typed`: with "__type": "AddedToken", the
// form a token value of tokenizer_config.json must have (Transformers rejects other objects there).
Entry object_entry(const ordered_json& value, const std::string& where, bool typed) {
  if (!value.is_object()) fail(where, " must be an object, found ", value.dump());
  if (typed && value.value("__type", "") != "AddedToken") {
    fail(where, " is an object without \"__type\": \"AddedToken\", which Transformers cannot read as a token");
  }
  Entry entry;
  entry.where = where;
  for (const auto& [key, field] : value.items()) {
    if (key == "__type" && typed) continue;
    if (key == "content") {
      if (!field.is_string() || field.get<std::string>().empty()) {
        fail(where, ": \"content\" must be a non-empty string");
      }
      entry.content = field.get<std::string>();
      continue;
    }
    bool* target = key == "single_word" ? &entry.single_word
                   : key == "lstrip"    ? &entry.lstrip
                   : key == "rstrip"    ? &entry.rstrip
                   : key == "special"   ? &entry.special
                                        : nullptr;
    if (!target && key != "normalized") fail(where, ": unknown AddedToken field \"", key, "\"");
    if (!field.is_boolean()) fail(where, ": \"", key, "\" must be true or false, found ", field.dump());
    if (target) *target = field.get<bool>();
    else entry.normalized = field.get<bool>();
  }
  if (entry.content.empty()) fail(where, " has no \"content\"");
  return entry;
}

// A token value of tokenizer_config.json (bos_token, ...): a string, an AddedToken object, or null (none).
std::optional<Entry> token_value(const ordered_json& value, const std::string& where) {
  if (value.is_null()) return std::nullopt;
  if (value.is_string()) {
    if (value.get<std::string>().empty()) fail(where, " is empty");
    return string_entry(value.get<std::string>(), where);
  }
  if (value.is_object()) return object_entry(value, where, /*typed=*/true);
  fail(where, " must be a string, an AddedToken object or null, found ", value.dump());
}

using Named = std::vector<std::pair<std::string, std::optional<Entry>>>;

// The named special tokens in Transformers' order: the seven standard ones (after the class's defaults and
// special_tokens_map.json, which is read only when tokenizer_config.json has no added_tokens_decoder, and then
// overrides it), then other "*_token" keys (AddedToken objects first, then strings) and a dict extra_special_tokens.
Named named_tokens(const Folder& in, Backend backend) {
  ordered_json config = in.config;
  if (!config.contains("added_tokens_decoder")) {
    for (const auto& [key, value] : in.map.items()) {
      if (key == "additional_special_tokens") continue;  // replaced by the model's pieces (extra_tokens)
      if (!is_named_key(key)) {
        fail(in.map_path, ": \"", key, "\": moetune reads only bos/eos/unk/sep/pad/cls/mask_token here");
      }
      config[key] = value;
      if (value.is_object()) {  // Transformers: AddedToken(**value, special=True)
        config[key]["__type"] = "AddedToken";
        config[key]["special"] = true;
      }
    }
  }
  Named named;
  const SentencePieceModel& model = in.model;
  for (const char* key : kNamedKeys) {
    const std::string k = key, where = in.config_path + ": \"" + k + "\"";
    if (config.contains(k)) {
      named.emplace_back(k, token_value(config[k], where));
      continue;
    }
    std::optional<std::string> fallback;
    if (backend == Backend::Llama) {  // LlamaTokenizer's defaults
      if (k == "bos_token") fallback = "<s>";
      if (k == "eos_token") fallback = "</s>";
      if (k == "unk_token") fallback = "<unk>";
    } else {  // the model's own pieces for the roles it has
      if (k == "bos_token" && model.bos_id >= 0) fallback = model.bos_piece;
      if (k == "eos_token" && model.eos_id >= 0) fallback = model.eos_piece;
      if (k == "unk_token" && model.unk_id >= 0) fallback = model.unk_piece;
    }
    if (fallback) named.emplace_back(k, string_entry(*fallback, where + " (absent: the default " + *fallback + ")"));
  }
  Named objects, strings;
  for (const auto& [key, value] : config.items()) {
    if (is_named_key(key) || key.size() < 6 || key.compare(key.size() - 6, 6, "_token") != 0) continue;
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
  for (Named* group : {&objects, &strings}) {
    for (auto& [key, entry] : *group) {
      auto same = std::find_if(named.begin(), named.end(), [&](const auto& n) { return n.first == key; });
      if (same != named.end()) same->second = std::move(entry);
      else named.emplace_back(key, std::move(entry));
    }
  }
  return named;
}

// The extra special tokens: tokenizer_config.json's list, or where it has none the model's control pieces (special)
// and user-defined pieces (not special), as Transformers' SentencePieceExtractor lists them.
std::vector<Entry> extra_tokens(const Folder& in) {
  std::string key;
  if (in.config.contains("extra_special_tokens")) key = "extra_special_tokens";
  else if (in.config.contains("additional_special_tokens")) key = "additional_special_tokens";
  std::vector<Entry> extras;
  if (!key.empty() && !in.config[key].is_object()) {  // a dict extra_special_tokens names tokens (named_tokens)
    const ordered_json& list = in.config[key];
    if (list.is_null()) return extras;
    const std::string where = in.config_path + ": \"" + key + "\"";
    if (!list.is_array()) fail(where, " must be a list, found ", list.dump());
    for (size_t i = 0; i < list.size(); ++i) {
      if (auto entry = token_value(list[i], where + "[" + std::to_string(i) + "]")) extras.push_back(std::move(*entry));
    }
    return extras;
  }
  for (size_t id = 0; id < in.model.pieces.size(); ++id) {
    const SentencePieceModel::Piece& piece = in.model.pieces[id];
    if (piece.type != PieceType::Control && piece.type != PieceType::UserDefined) continue;
    Entry entry;
    entry.content = piece.text;
    entry.special = piece.type == PieceType::Control;
    entry.normalized = false;
    entry.where = in.model_path + ": piece " + std::to_string(id);
    if (!entry.content.empty()) extras.push_back(std::move(entry));
  }
  return extras;
}

// tokenizer_config.json's added_tokens_decoder, by id.
std::vector<std::pair<int64_t, Entry>> decoder_tokens(const Folder& in) {
  std::vector<std::pair<int64_t, Entry>> tokens;
  if (!in.config.contains("added_tokens_decoder")) return tokens;
  const ordered_json& decoder = in.config["added_tokens_decoder"];
  const std::string where = in.config_path + ": \"added_tokens_decoder\"";
  if (!decoder.is_object()) fail(where, " must be an object");
  for (const auto& [id_text, value] : decoder.items()) {
    const std::string at = where + ".\"" + id_text + "\"";
    if (id_text.empty() || id_text.size() > 9 || id_text.find_first_not_of("0123456789") != std::string::npos) {
      fail(at, ": the key must be a token id");
    }
    tokens.emplace_back(std::stoll(id_text), object_entry(value, at, /*typed=*/false));
  }
  std::sort(tokens.begin(), tokens.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  return tokens;
}

}  // namespace

std::optional<bool> flag(const ordered_json& object, const char* key, const std::string& where) {
  if (!object.contains(key) || object[key].is_null()) return std::nullopt;
  if (!object[key].is_boolean()) fail(where, ": \"", key, "\" must be true, false or null, found ", object[key].dump());
  return object[key].get<bool>();
}

// Transformers' TokenizersBackend.__init__: one add_tokens call with the added_tokens_decoder entries, then each named
// and extra token whose content is not among them and that is not equal to one already in the list; an entry whose
// content is named becomes special. The backend keeps, per content, the flags of the last entry, and holds it special
// when any entry was.
AddedTokens added_tokens(const Folder& in, Backend backend, const std::unordered_map<std::string, int64_t>& vocab) {
  const auto decoder = decoder_tokens(in);
  const bool unigram = in.model.model_type == SentencePieceModel::ModelType::Unigram;
  if (backend == Backend::Generic && unigram && !decoder.empty()) {
    fail(in.config_path, ": \"added_tokens_decoder\" with a unigram tokenizer.model and Transformers' generic ",
         "TokenizersBackend: Transformers 5.17 cannot load that folder (its conversion fails), so there are no ids to ",
         "match; give the folder a tokenizer.json");
  }
  const Named named = named_tokens(in, backend);
  std::vector<Entry> order;
  for (const auto& [id, entry] : decoder) order.push_back(entry);
  auto declared = [&](const std::string& content) {
    return std::any_of(decoder.begin(), decoder.end(), [&](const auto& d) { return d.second.content == content; });
  };
  auto join = [&](const Entry& entry) {
    if (declared(entry.content)) return;
    for (const Entry& earlier : order) {
      if (same_value(earlier, entry)) return;
    }
    order.push_back(entry);
  };
  for (const auto& [key, entry] : named) {
    if (entry) join(*entry);
  }
  for (const Entry& entry : extra_tokens(in)) join(entry);
  auto is_named = [&](const std::string& content) {
    return std::any_of(named.begin(), named.end(),
                       [&](const auto& n) { return n.second && n.second->content == content; });
  };

  AddedTokens out;
  std::unordered_map<std::string, size_t> index;  // content -> its place in out.tokens
  int64_t next_id = static_cast<int64_t>(in.model.pieces.size());
  for (const Entry& entry : order) {
    AddedToken token{0, entry.content, entry.single_word, entry.lstrip, entry.rstrip, false,
                     entry.special || is_named(entry.content), entry.where};
    token.normalized = entry.normalized.value_or(!token.special);
    auto [it, added] = index.try_emplace(entry.content, out.tokens.size());
    if (!added) {
      AddedToken& earlier = out.tokens[it->second];
      token.id = earlier.id;
      token.special = token.special || earlier.special;
      earlier = token;
      continue;
    }
    auto piece = vocab.find(entry.content);
    token.id = piece != vocab.end() ? piece->second : next_id++;
    out.tokens.push_back(token);
  }
  for (const auto& [id, entry] : decoder) {
    const AddedToken& token = out.tokens[index.at(entry.content)];
    if (token.id != id) {
      fail(entry.where, ": Transformers gives ", nlohmann::json(entry.content).dump(), " id ", token.id, " (a piece ",
           "keeps its tokenizer.model id, other tokens follow the ", in.model.pieces.size(), " pieces in order), not ",
           id, "; moetune does not rename or move tokens");
    }
  }
  for (const char* key : {"bos_token", "eos_token"}) {
    for (const auto& [k, entry] : named) {
      if (k != key || !entry) continue;
      AddedToken role = out.tokens[index.at(entry->content)];
      role.where = entry->where;
      (std::string(key) == "bos_token" ? out.bos : out.eos) = role;
    }
  }
  std::sort(out.tokens.begin(), out.tokens.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  return out;
}

}  // namespace moetune::tokenizer::spm_conversion
