// Why: see sentencepiece_conversion.h.
#include "tokenizer/sentencepiece_conversion.h"

#include <filesystem>
#include <optional>
#include <unordered_map>
#include <utility>

#include "core/error.h"
#include "tokenizer/sentencepiece_added_tokens.h"
#include "tokenizer/sentencepiece_model.h"
#include "tokenizer/utf8.h"

namespace moetune::tokenizer {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using spm_conversion::Backend;
using spm_conversion::flag;
using spm_conversion::Folder;
using ModelType = SentencePieceModel::ModelType;

constexpr const char* kMetaspace = "\xE2\x96\x81";  // U+2581

// A tokenizer.model folder with its files.
Folder read_folder(const std::string& path) {
  Folder in;
  static_cast<FolderFiles&>(in) = FolderFiles::read(path);
  in.model_path = (fs::path(path) / "tokenizer.model").string();
  in.model = SentencePieceModel::read(in.model_path);
  return in;
}

// The class AutoTokenizer picks (special_tokens.h), as one of the two moetune converts with.
Backend resolve_backend(const Folder& in) {
  const TokenizerClass chosen = tokenizer_class(in);
  if (chosen.name.empty()) {
    fail(chosen.where, ": moetune does not know which tokenizer class Transformers picks for it (it knows llama, ",
         "mistral, mixtral, olmoe, qwen2_moe, qwen3_moe), so it cannot convert tokenizer.model as Transformers would; ",
         "give the folder a tokenizer.json");
  }
  if (chosen.name == "LlamaTokenizer") return Backend::Llama;
  if (chosen.name == "TokenizersBackend" || chosen.name == "PreTrainedTokenizer") return Backend::Generic;
  fail(chosen.where, " makes Transformers use ", chosen.name, "; moetune converts tokenizer.model as Transformers' ",
       "LlamaTokenizer and TokenizersBackend do, not as ", chosen.name, "; give the folder a tokenizer.json");
}

void refuse_unsupported_options(const Folder& in, Backend backend) {
  const std::string& where = in.config_path;
  if (flag(in.config, "split_special_tokens", where).value_or(false)) {
    fail(where, ": \"split_special_tokens\": true (special tokens encoded as plain text) is not implemented");
  }
  if (flag(in.config, "fix_mistral_regex", where).value_or(false)) {
    fail(where, ": \"fix_mistral_regex\": true is not implemented");
  }
  const bool unigram = backend == Backend::Generic && in.model.model_type == ModelType::Unigram;
  const char* const kCorrupt = "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output";
  if (flag(in.config, "clean_up_tokenization_spaces", where).value_or(false) &&
      (unigram || flag(in.config, kCorrupt, where).value_or(false))) {
    fail(where, ": \"clean_up_tokenization_spaces\": true (Transformers' rewriting of decoded text) is not ",
         "implemented; set it to false");
  }
  if (in.model.model_type != ModelType::Unigram && in.model.model_type != ModelType::Bpe) {
    fail(in.model_path, ": trainer_spec.model_type is ", in.model.model_type == ModelType::Word ? "WORD" : "CHAR",
         "; moetune converts BPE and unigram SentencePiece models");
  }
  if (backend == Backend::Generic && !in.model.precompiled_charsmap.empty()) {
    fail(in.model_path, ": normalizer_spec \"", in.model.normalizer_name, "\" has a precompiled_charsmap, which ",
         "Transformers applies with the Precompiled normalizer; moetune does not implement it (give the folder a ",
         "tokenizer.json, or use a model trained with normalization_rule_name=identity)");
  }
  const std::string legacy_file = (fs::path(in.path) / "added_tokens.json").string();
  if (fs::exists(legacy_file) && !in.config.contains("added_tokens_decoder")) {
    fail(legacy_file, ": the legacy added-tokens file is not supported; list the tokens in tokenizer_config.json's ",
         "\"added_tokens_decoder\"");
  }
}

json pattern(const char* text) { return json::object({{"String", text}}); }

// SentencePieceExtractor's BPE: all pieces in id order, and merges generated from them: per piece in id order, each
// split into two pieces of the vocab, shorter left part first.
json bpe_model(const Folder& in, const std::unordered_map<std::string, int64_t>& vocab, Backend backend) {
  json pieces = json::object();
  for (size_t id = 0; id < in.model.pieces.size(); ++id) pieces[in.model.pieces[id].text] = id;
  json merges = json::array();
  for (const auto& piece : in.model.pieces) {
    const std::string& text = piece.text;
    size_t at = 0;
    utf8::next(text, at);
    for (; at < text.size(); utf8::next(text, at)) {
      if (vocab.count(text.substr(0, at)) && vocab.count(text.substr(at))) {
        merges.push_back(json::array({text.substr(0, at), text.substr(at)}));
      }
    }
  }
  json unk = nullptr;
  if (backend == Backend::Generic) {
    if (!vocab.count(in.model.unk_piece)) {
      fail(in.model_path, ": trainer_spec.unk_piece ", json(in.model.unk_piece).dump(), " is not a piece of the model");
    }
    unk = in.model.unk_piece;
  }
  return json::object({{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", unk},
                       {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr}, {"fuse_unk", true},
                       {"byte_fallback", backend == Backend::Llama || in.model.byte_fallback},
                       {"ignore_merges", false}, {"vocab", std::move(pieces)}, {"merges", std::move(merges)}});
}

json unigram_model(const Folder& in) {
  if (in.model.unk_id < 0 || static_cast<size_t>(in.model.unk_id) >= in.model.pieces.size()) {
    fail(in.model_path, ": trainer_spec.unk_id ", in.model.unk_id, " is not a piece of the model");
  }
  json pieces = json::array();
  for (const auto& piece : in.model.pieces) {
    pieces.push_back(json::array({piece.text, static_cast<double>(piece.score)}));
  }
  return json::object({{"type", "Unigram"}, {"unk_id", in.model.unk_id}, {"vocab", std::move(pieces)},
                       {"byte_fallback", in.model.byte_fallback}});
}

// TemplateProcessing with BOS first / EOS last as add_bos_token / add_eos_token say (off where there is no such token).
json post_processor(const Folder& in, const spm_conversion::AddedTokens& added) {
  auto role = [&](const char* key, const std::optional<spm_conversion::AddedToken>& token) {
    return flag(in.config, key, in.config_path).value_or(false) && token ? &*token : nullptr;
  };
  const spm_conversion::AddedToken* bos = role("add_bos_token", added.bos);
  const spm_conversion::AddedToken* eos = role("add_eos_token", added.eos);
  json special = json::object();
  auto token = [&](const spm_conversion::AddedToken& role, int type_id) {
    if (role.content.find_first_of(" :") != std::string::npos) {
      fail(role.where, ": ", json(role.content).dump(), " cannot be written in Transformers' template string (it ",
           "holds a space or a colon), so Transformers cannot load this folder");
    }
    special[role.content] = json::object(
        {{"id", role.content}, {"ids", json::array({role.id})}, {"tokens", json::array({role.content})}});
    return json::object({{"SpecialToken", json::object({{"id", role.content}, {"type_id", type_id}})}});
  };
  auto sequence = [](const char* id, int type_id) {
    return json::object({{"Sequence", json::object({{"id", id}, {"type_id", type_id}})}});
  };
  json single = json::array();
  if (bos) single.push_back(token(*bos, 0));
  single.push_back(sequence("A", 0));
  if (eos) single.push_back(token(*eos, 0));
  json pair = single;
  if (bos) pair.push_back(token(*bos, 1));
  pair.push_back(sequence("B", 1));
  if (eos) pair.push_back(token(*eos, 1));
  return json::object(
      {{"type", "TemplateProcessing"}, {"single", single}, {"pair", pair}, {"special_tokens", special}});
}

}  // namespace

json convert_sentencepiece_folder(const std::string& path) {
  const Folder in = read_folder(path);
  const Backend backend = resolve_backend(in);
  refuse_unsupported_options(in, backend);
  std::unordered_map<std::string, int64_t> vocab;
  for (size_t id = 0; id < in.model.pieces.size(); ++id) {
    if (!vocab.emplace(in.model.pieces[id].text, static_cast<int64_t>(id)).second) {
      fail(in.model_path, ": piece ", id, " ", json(in.model.pieces[id].text).dump(), " appears twice");
    }
  }
  const spm_conversion::AddedTokens added = spm_conversion::added_tokens(in, backend, vocab);
  json added_json = json::array();
  for (const auto& t : added.tokens) {
    added_json.push_back(json::object({{"id", t.id}, {"content", t.content}, {"single_word", t.single_word},
                                       {"lstrip", t.lstrip}, {"rstrip", t.rstrip}, {"normalized", t.normalized},
                                       {"special", t.special}}));
  }

  json normalizer = nullptr, pre_tokenizer = nullptr;
  json steps = json::array({json::object({{"type", "Replace"}, {"pattern", pattern(kMetaspace)}, {"content", " "}})});
  if (backend == Backend::Llama) {
    const bool prefix = flag(in.config, "add_prefix_space", in.config_path).value_or(true);
    const bool legacy = flag(in.config, "legacy", in.config_path).value_or(false);
    const char* scheme = !prefix ? "never" : legacy ? "always" : "first";
    pre_tokenizer = json::object(
        {{"type", "Metaspace"}, {"replacement", kMetaspace}, {"prepend_scheme", scheme}, {"split", false}});
    steps.push_back(json::object({{"type", "ByteFallback"}}));
    steps.push_back(json::object({{"type", "Fuse"}}));
    if (prefix) steps.push_back(json::object({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}));
  } else {
    const json replace = json::object({{"type", "Replace"}, {"pattern", pattern(" ")}, {"content", kMetaspace}});
    normalizer = json::object({{"type", "Sequence"}, {"normalizers", json::array({replace})}});
    if (in.model.byte_fallback) {
      steps.push_back(json::object({{"type", "ByteFallback"}}));
      steps.push_back(json::object({{"type", "Fuse"}}));
    }
  }
  const bool unigram = backend == Backend::Generic && in.model.model_type == ModelType::Unigram;
  return json::object({{"version", "1.0"},
                       {"truncation", nullptr},
                       {"padding", nullptr},
                       {"added_tokens", std::move(added_json)},
                       {"normalizer", std::move(normalizer)},
                       {"pre_tokenizer", std::move(pre_tokenizer)},
                       {"post_processor", post_processor(in, added)},
                       {"decoder", json::object({{"type", "Sequence"}, {"decoders", std::move(steps)}})},
                       {"model", unigram ? unigram_model(in) : bpe_model(in, vocab, backend)}});
}

std::vector<std::pair<std::string, std::string>> sentencepiece_special_tokens(const std::string& path) {
  const Folder in = read_folder(path);
  return set_tokens(spm_conversion::sentencepiece_named_tokens(in, resolve_backend(in)));
}

}  // namespace moetune::tokenizer
