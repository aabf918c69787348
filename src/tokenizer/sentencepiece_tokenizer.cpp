// Why: see sentencepiece_tokenizer.h.
#include "tokenizer/sentencepiece_tokenizer.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "tokenizer/utf8.h"

namespace moetune::tokenizer {

namespace {

nlohmann::json read_config(const std::string& path) {
  if (path.empty()) return nlohmann::json::object();
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, ": cannot open");
  std::ostringstream text;
  text << in.rdbuf();
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(text.str());
  } catch (const nlohmann::json::parse_error& e) {
    fail(path, ": not valid JSON: ", e.what());
  }
  if (!config.is_object()) fail(path, ": not a JSON object");
  return config;
}

// A token of tokenizer_config.json: a string or {"content": ...}; nullopt for null.
std::optional<std::string> token_content(const nlohmann::json& value, const std::string& where) {
  if (value.is_null()) return std::nullopt;
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content") && value["content"].is_string()) {
    return value["content"].get<std::string>();
  }
  fail(where, " must be a string, {\"content\": ...} or null, found ", value.dump());
}

bool flag(const nlohmann::json& config, const char* key, bool fallback, const std::string& path) {
  if (!config.contains(key) || config[key].is_null()) return fallback;
  if (!config[key].is_boolean()) fail(path, ": \"", key, "\" must be true or false, found ", config[key].dump());
  return config[key].get<bool>();
}

}  // namespace

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& model_path, const std::string& config_path)
    : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()), model_path_(model_path) {
  if (const auto status = sp_->Load(model_path); !status.ok()) {
    fail(model_path, ": cannot load as a SentencePiece model (", status.ToString(), ")");
  }
  special_id_.assign(static_cast<size_t>(sp_->GetPieceSize()), false);
  const nlohmann::json config = read_config(config_path);
  const std::string where = config_path.empty() ? model_path : config_path;

  if (!flag(config, "legacy", true, where)) {
    fail(where, ": \"legacy\": false (Transformers' non-legacy handling of the text after a special token) is not ",
         "implemented for tokenizer.model; remove it, or give the folder a tokenizer.json");
  }
  if (!flag(config, "add_prefix_space", true, where)) {
    fail(where, ": \"add_prefix_space\": false is not implemented for tokenizer.model");
  }
  if (config.contains("sp_model_kwargs") && !config["sp_model_kwargs"].is_null() &&
      !(config["sp_model_kwargs"].is_object() && config["sp_model_kwargs"].empty())) {
    fail(where, ": \"sp_model_kwargs\" ", config["sp_model_kwargs"].dump(), " would change the ids (sampling); ",
         "moetune encodes deterministically, so it must be {}");
  }

  // The role tokens: the config's, or where a key is absent the model's own piece for that role.
  const std::pair<const char*, int> roles[] = {
      {"bos_token", sp_->bos_id()}, {"eos_token", sp_->eos_id()}, {"unk_token", sp_->unk_id()}, {"pad_token", sp_->pad_id()}};
  std::optional<std::string> bos, eos;
  for (const auto& [key, model_id] : roles) {
    std::optional<std::string> content;
    if (config.contains(key)) content = token_content(config[key], where + ": \"" + key + "\"");
    else if (model_id >= 0) content = sp_->IdToPiece(model_id);
    if (!content) continue;
    add_special(*content, where + ": \"" + key + "\"");
    if (std::string_view(key) == "bos_token") bos = content;
    if (std::string_view(key) == "eos_token") eos = content;
  }
  for (const char* key : {"additional_special_tokens", "extra_special_tokens"}) {
    if (!config.contains(key) || config[key].is_null()) continue;
    if (!config[key].is_array()) fail(where, ": \"", key, "\" must be a list, found ", config[key].dump());
    for (size_t i = 0; i < config[key].size(); ++i) {
      const std::string at = where + ": \"" + key + "\"[" + std::to_string(i) + "]";
      if (auto content = token_content(config[key][i], at)) add_special(*content, at);
    }
  }
  if (config.contains("added_tokens_decoder")) {
    const nlohmann::json& added = config["added_tokens_decoder"];
    if (!added.is_object()) fail(where, ": \"added_tokens_decoder\" must be an object");
    for (const auto& [id_text, entry] : added.items()) {
      const std::string at = where + ": \"added_tokens_decoder\".\"" + id_text + "\"";
      if (!entry.is_object()) fail(at, " must be an object");
      for (const char* option : {"lstrip", "rstrip", "single_word"}) {
        if (entry.contains(option) && entry[option].is_boolean() && entry[option].get<bool>()) {
          fail(at, ": \"", option, "\": true is not implemented for tokenizer.model");
        }
      }
      const std::optional<std::string> content = token_content(entry, at);
      if (!content) fail(at, " has no content");
      add_special(*content, at);
      if (id_text.empty() || id_text.find_first_not_of("0123456789") != std::string::npos || id_text.size() > 9) {
        fail(at, ": the key must be a token id");
      }
      const int declared = std::stoi(id_text);
      if (sp_->PieceToId(*content) != declared) {
        fail(at, ": ", nlohmann::json(*content).dump(), " is piece ", sp_->PieceToId(*content), " of ", model_path,
             ", not ", declared, " (tokens beyond the SentencePiece vocabulary are not supported)");
      }
    }
  }
  std::stable_sort(specials_.begin(), specials_.end(),
                   [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });

  const bool add_bos = flag(config, "add_bos_token", true, where);
  const bool add_eos = flag(config, "add_eos_token", false, where);
  if (add_bos && bos) bos_id_ = sp_->PieceToId(*bos);
  if (add_eos) {
    if (!eos) fail(where, ": \"add_eos_token\" is true but there is no eos_token");
    eos_id_ = sp_->PieceToId(*eos);
  }
}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

void SentencePieceTokenizer::add_special(const std::string& content, const std::string& where) {
  if (content.empty()) fail(where, " is empty");
  const int id = sp_->PieceToId(content);
  if (sp_->IdToPiece(id) != content) {
    fail(where, ": ", nlohmann::json(content).dump(), " is not a piece of ", model_path_,
         " (tokens beyond the SentencePiece vocabulary are not supported)");
  }
  for (const auto& [existing, _] : specials_) {
    if (existing == content) return;
  }
  specials_.emplace_back(content, id);
  special_id_[static_cast<size_t>(id)] = true;
}

void SentencePieceTokenizer::encode_piece(std::string_view piece, std::vector<int32_t>& ids) const {
  if (piece.empty()) return;
  std::vector<int> piece_ids;
  if (const auto status = sp_->Encode(piece, &piece_ids); !status.ok()) {
    fail(model_path_, ": sentencepiece cannot encode a text of ", piece.size(), " bytes (", status.ToString(), ")");
  }
  ids.insert(ids.end(), piece_ids.begin(), piece_ids.end());
}

std::vector<int32_t> SentencePieceTokenizer::encode(std::string_view text, bool add_special_tokens) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  if (add_special_tokens && bos_id_ >= 0) ids.push_back(bos_id_);
  // next[k]: where specials_[k] next occurs at or after `done` (npos: nowhere), refreshed only when passed.
  std::vector<size_t> next(specials_.size());
  for (size_t k = 0; k < specials_.size(); ++k) next[k] = text.find(specials_[k].first);
  size_t done = 0;
  while (true) {
    size_t best = specials_.size();
    for (size_t k = 0; k < specials_.size(); ++k) {
      if (next[k] < done) next[k] = text.find(specials_[k].first, done);
      if (next[k] != std::string_view::npos && (best == specials_.size() || next[k] < next[best])) best = k;
    }
    if (best == specials_.size()) break;
    encode_piece(text.substr(done, next[best] - done), ids);
    ids.push_back(specials_[best].second);
    done = next[best] + specials_[best].first.size();
  }
  encode_piece(text.substr(done), ids);
  if (add_special_tokens && eos_id_ >= 0) ids.push_back(eos_id_);
  return ids;
}

std::string SentencePieceTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  std::string out;
  std::vector<int> run;
  auto flush = [&] {
    if (run.empty()) return;
    std::string text;
    if (const auto status = sp_->Decode(run, &text); !status.ok()) {
      fail(model_path_, ": sentencepiece cannot decode ", run.size(), " ids (", status.ToString(), ")");
    }
    out += text;
    run.clear();
  };
  for (int32_t id : ids) {
    if (id < 0 || id >= sp_->GetPieceSize()) continue;
    if (!special_id_[static_cast<size_t>(id)]) {
      run.push_back(id);
      continue;
    }
    flush();
    if (!skip_special_tokens) out += sp_->IdToPiece(id);
  }
  flush();
  return out;
}

std::optional<int32_t> SentencePieceTokenizer::token_to_id(std::string_view token) const {
  const int id = sp_->PieceToId(token);
  if (sp_->IdToPiece(id) != token) return std::nullopt;
  return id;
}

std::optional<std::string> SentencePieceTokenizer::id_to_token(int32_t id) const {
  if (id < 0 || id >= sp_->GetPieceSize()) return std::nullopt;
  return sp_->IdToPiece(id);
}

bool SentencePieceTokenizer::is_special(int32_t id) const {
  return id >= 0 && id < sp_->GetPieceSize() && special_id_[static_cast<size_t>(id)];
}

std::vector<int32_t> SentencePieceTokenizer::special_token_ids() const {
  std::vector<int32_t> out;
  for (const auto& [_, id] : specials_) out.push_back(id);
  std::sort(out.begin(), out.end());
  return out;
}

int SentencePieceTokenizer::vocab_size() const { return sp_->GetPieceSize(); }

}  // namespace moetune::tokenizer
