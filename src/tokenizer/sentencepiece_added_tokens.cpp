// Why: see sentencepiece_added_tokens.h.
#include "tokenizer/sentencepiece_added_tokens.h"

#include <algorithm>
#include <utility>

#include "core/error.h"

namespace moetune::tokenizer::spm_conversion {

namespace {

using ordered_json = nlohmann::ordered_json;
using PieceType = SentencePieceModel::PieceType;

// Python's `==` between two token values: strings by content, AddedTokens by every field.
bool same_value(const TokenValue& a, const TokenValue& b) {
  if (a.text || b.text) return a.text && b.text && a.content == b.content;
  return a.content == b.content && a.single_word == b.single_word && a.lstrip == b.lstrip && a.rstrip == b.rstrip &&
         a.special == b.special && a.normalized.value_or(!a.special) == b.normalized.value_or(!b.special);
}

// The extra special tokens: tokenizer_config.json's list, or where it has none the model's control pieces (special)
// and user-defined pieces (not special), as Transformers' SentencePieceExtractor lists them.
std::vector<TokenValue> extra_tokens(const Folder& in) {
  std::string key;
  if (in.config.contains("extra_special_tokens")) key = "extra_special_tokens";
  else if (in.config.contains("additional_special_tokens")) key = "additional_special_tokens";
  std::vector<TokenValue> extras;
  if (!key.empty() && !in.config[key].is_object()) {  // a dict extra_special_tokens names tokens (special_tokens.h)
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
    TokenValue entry;
    entry.content = piece.text;
    entry.special = piece.type == PieceType::Control;
    entry.normalized = false;
    entry.where = in.model_path + ": piece " + std::to_string(id);
    if (!entry.content.empty()) extras.push_back(std::move(entry));
  }
  return extras;
}

// tokenizer_config.json's added_tokens_decoder, by id.
std::vector<std::pair<int64_t, TokenValue>> decoder_tokens(const Folder& in) {
  std::vector<std::pair<int64_t, TokenValue>> tokens;
  if (!in.config.contains("added_tokens_decoder")) return tokens;
  const ordered_json& decoder = in.config["added_tokens_decoder"];
  const std::string where = in.config_path + ": \"added_tokens_decoder\"";
  if (!decoder.is_object()) fail(where, " must be an object");
  for (const auto& [id_text, value] : decoder.items()) {
    const std::string at = where + ".\"" + id_text + "\"";
    if (id_text.empty() || id_text.size() > 9 || id_text.find_first_not_of("0123456789") != std::string::npos) {
      fail(at, ": the key must be a token id");
    }
    tokens.emplace_back(std::stoll(id_text), object_token(value, at, /*typed=*/false));
  }
  std::sort(tokens.begin(), tokens.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  return tokens;
}

}  // namespace

NamedTokens sentencepiece_named_tokens(const Folder& in, Backend backend) {
  if (!in.config.contains("added_tokens_decoder")) {
    for (const auto& [key, value] : in.map.items()) {
      const bool standard = key == "bos_token" || key == "eos_token" || key == "unk_token" || key == "sep_token" ||
                            key == "pad_token" || key == "cls_token" || key == "mask_token";
      if (!standard && key != "additional_special_tokens") {
        fail(in.map_path, ": \"", key, "\": with a tokenizer.model, moetune reads only bos/eos/unk/sep/pad/cls/",
             "mask_token and additional_special_tokens here");
      }
    }
  }
  TokenDefaults defaults;
  if (backend == Backend::Llama) {
    defaults = *class_defaults("LlamaTokenizer");
  } else {  // Transformers sets these from the model's trainer_spec where the ids are not -1
    if (in.model.bos_id >= 0) defaults.emplace_back("bos_token", in.model.bos_piece);
    if (in.model.eos_id >= 0) defaults.emplace_back("eos_token", in.model.eos_piece);
    if (in.model.unk_id >= 0) defaults.emplace_back("unk_token", in.model.unk_piece);
  }
  return named_tokens(in, defaults);
}

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
  const NamedTokens named = sentencepiece_named_tokens(in, backend);
  std::vector<TokenValue> order;
  for (const auto& [id, entry] : decoder) order.push_back(entry);
  auto declared = [&](const std::string& content) {
    return std::any_of(decoder.begin(), decoder.end(), [&](const auto& d) { return d.second.content == content; });
  };
  auto join = [&](const TokenValue& entry) {
    if (declared(entry.content)) return;
    for (const TokenValue& earlier : order) {
      if (same_value(earlier, entry)) return;
    }
    order.push_back(entry);
  };
  for (const auto& [key, entry] : named) {
    if (entry) join(*entry);
  }
  for (const TokenValue& entry : extra_tokens(in)) join(entry);
  auto is_named = [&](const std::string& content) {
    return std::any_of(named.begin(), named.end(),
                       [&](const auto& n) { return n.second && n.second->content == content; });
  };

  AddedTokens out;
  std::unordered_map<std::string, size_t> index;  // content -> its place in out.tokens
  int64_t next_id = static_cast<int64_t>(in.model.pieces.size());
  for (const TokenValue& entry : order) {
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
