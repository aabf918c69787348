#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "tokenizer/added_vocabulary.h"
#include "tokenizer/bpe.h"
#include "tokenizer/decoder.h"
#include "tokenizer/json_path.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/post_processor.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/sentencepiece_conversion.h"
#include "tokenizer/special_tokens.h"
#include "tokenizer/unigram.h"
#include "tokenizer/utf8.h"

namespace moetune {

using tokenizer_json::JsonAt;

struct Tokenizer::Impl {
  explicit Impl(std::unique_ptr<tokenizer::Model> m) : model(std::move(m)) {}

  std::unique_ptr<tokenizer::Normalizer> normalizer;        // null: none
  std::unique_ptr<tokenizer::PreTokenizer> pre_tokenizer;   // null: the whole piece is one word
  std::unique_ptr<tokenizer::Model> model;                  // BPE or Unigram
  std::unique_ptr<tokenizer::PostProcessor> post_processor; // null: nothing added
  std::unique_ptr<tokenizer::Decoder> decoder;              // null: tokens joined with spaces
  tokenizer::AddedVocabulary added;
  int32_t max_id = -1;
};

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

namespace {

void check_top_level(const JsonAt& top) {
  if (top.has_value("version") && top.at("version").as_string() != "1.0") {
    top.at("version").fail("unknown tokenizer.json version \"", top.at("version").as_string(), "\" (expected \"1.0\")");
  }
  if (top.has_value("truncation")) {
    top.at("truncation").fail("truncation is set; moetune encodes whole texts (cut sequences in the data pipeline), ",
                              "so it must be null");
  }
  if (top.has_value("padding")) {
    JsonAt strategy = top.at("padding").at("strategy");
    if (!(strategy.json().is_string() && strategy.as_string() == "BatchLongest")) {
      strategy.fail("fixed-length padding would add pad ids to every encoding; it must be null or BatchLongest");
    }
  }
}

std::unique_ptr<tokenizer::Model> load_model(const JsonAt& model) {
  model.expect_object();
  if (model.has_value("type")) {
    std::string type = model.at("type").as_string();
    if (type == "Unigram") return tokenizer::UnigramModel::from_json(model);
    if (type != "BPE") {
      model.at("type").fail("model type \"", type, "\" is not supported (moetune implements BPE: byte-level as in ",
                            "Qwen/OLMoE/GPT-2, SentencePiece-style as in Mixtral/Llama; and Unigram)");
    }
  } else if (!model.has("merges")) {
    model.fail("the model has no \"type\" and no \"merges\": not a BPE model");
  }
  return std::make_unique<tokenizer::BpeModel>(tokenizer::BpeModel::from_json(model));
}

// HF adds the tokens one by one (TokenizerImpl deserialization -> AddedVocabulary::add_tokens): a token whose content
// is already a vocab token takes that id, the others take model size, then one more than the largest added id.
void load_added_tokens(const JsonAt& top, const tokenizer::Model& model, const tokenizer::Normalizer* normalizer,
                       tokenizer::AddedVocabulary& added) {
  std::vector<tokenizer::AddedToken> tokens;
  std::vector<std::string> patterns;
  if (!top.has_value("added_tokens")) {
    added.build(tokens, patterns);
    return;
  }
  JsonAt list = top.at("added_tokens");
  list.expect_array();
  auto model_size = static_cast<int64_t>(model.size());
  int64_t max_added = -1;
  for (size_t i = 0; i < list.size(); ++i) {
    JsonAt entry = list.at(i);
    tokenizer::AddedToken token;
    token.content = entry.at("content").as_string();
    token.single_word = entry.bool_or("single_word", false);
    token.lstrip = entry.bool_or("lstrip", false);
    token.rstrip = entry.bool_or("rstrip", false);
    token.normalized = entry.bool_or("normalized", true);
    token.special = entry.bool_or("special", false);
    int64_t declared = entry.at("id").as_int();
    if (token.content.empty()) continue;  // HF ignores empty added tokens
    for (const auto& earlier : tokens) {
      if (earlier.content == token.content) {
        entry.at("content").fail("added token ", nlohmann::json(token.content).dump(), " appears twice in added_tokens");
      }
    }
    int64_t id;
    if (auto in_vocab = model.token_to_id(token.content)) {
      id = *in_vocab;
    } else if (max_added < 0) {
      id = model_size;
    } else {
      id = (max_added >= model_size || model_size == 0) ? max_added + 1 : model_size;
    }
    if (id != declared) {
      entry.at("id").fail("added token ", nlohmann::json(token.content).dump(), " declares id ", declared,
                          " but Hugging Face gives it id ", id, " (vocab tokens keep their vocab id; the others follow ",
                          "the ", model_size, " vocab entries in file order); refusing an ambiguous file");
    }
    max_added = std::max(max_added, id);
    token.id = static_cast<int32_t>(id);
    std::string pattern = token.content;
    if (token.normalized && normalizer) normalizer->normalize(pattern);
    token.surface = pattern;
    tokens.push_back(std::move(token));
    patterns.push_back(std::move(pattern));
  }
  added.build(std::move(tokens), patterns);
}

}  // namespace

Tokenizer Tokenizer::from_json_string(std::string_view json_text, const std::string& source) {
  nlohmann::json root;
  try {
    root = nlohmann::json::parse(json_text.begin(), json_text.end());
  } catch (const nlohmann::json::parse_error& e) {
    fail(source, ": not valid JSON: ", e.what());
  }
  JsonAt top(root, source, "");
  top.expect_object();
  check_top_level(top);

  auto impl = std::make_unique<Impl>(load_model(top.at("model")));
  if (top.has_value("normalizer")) impl->normalizer = tokenizer::make_normalizer(top.at("normalizer"));
  if (top.has_value("pre_tokenizer")) impl->pre_tokenizer = tokenizer::make_pre_tokenizer(top.at("pre_tokenizer"));
  if (top.has_value("post_processor")) impl->post_processor = tokenizer::make_post_processor(top.at("post_processor"));
  if (top.has_value("decoder")) impl->decoder = tokenizer::make_decoder(top.at("decoder"));
  load_added_tokens(top, *impl->model, impl->normalizer.get(), impl->added);

  impl->max_id = impl->model->max_id();
  for (const auto& token : impl->added.tokens()) impl->max_id = std::max(impl->max_id, token.id);
  return Tokenizer(std::move(impl));
}

Tokenizer Tokenizer::from_file(const std::string& tokenizer_json_path) {
  std::ifstream in(tokenizer_json_path, std::ios::binary);
  if (!in) fail(tokenizer_json_path, ": cannot open (a Hugging Face tokenizer.json is needed)");
  std::ostringstream text;
  text << in.rdbuf();
  return from_json_string(text.str(), tokenizer_json_path);
}

std::string Tokenizer::file_in_folder(const std::string& folder) {
  namespace fs = std::filesystem;
  for (const char* name : {"tokenizer.json", "tokenizer.model"}) {
    if (fs::exists(fs::path(folder) / name)) return (fs::path(folder) / name).string();
  }
  fail((fs::path(folder) / "tokenizer.json").string(), ": cannot open, and there is no tokenizer.model beside it (a ",
       "Hugging Face tokenizer is needed)");
}

std::string Tokenizer::json_in_folder(const std::string& folder) {
  namespace fs = std::filesystem;
  const std::string path = file_in_folder(folder);
  if (fs::path(path).filename() == "tokenizer.model") return tokenizer::convert_sentencepiece_folder(folder).dump();
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, ": cannot open");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::pair<std::string, std::string>> Tokenizer::special_tokens_in_folder(const std::string& folder) {
  const std::string path = file_in_folder(folder);
  if (std::filesystem::path(path).filename() == "tokenizer.model") {
    return tokenizer::sentencepiece_special_tokens(folder);
  }
  nlohmann::json document;
  try {
    document = nlohmann::json::parse(json_in_folder(folder));
  } catch (const nlohmann::json::parse_error& e) {
    fail(path, ": not valid JSON: ", e.what());
  }
  return tokenizer::set_tokens(tokenizer::json_folder_tokens(tokenizer::FolderFiles::read(folder), document));
}

Tokenizer Tokenizer::from_folder(const std::string& folder) {
  const std::string path = file_in_folder(folder);
  const bool converted = std::filesystem::path(path).filename() == "tokenizer.model";
  return from_json_string(json_in_folder(folder), converted ? path + " (as Transformers converts it)" : path);
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  std::string repaired;  // invalid UTF-8 is read as U+FFFD, as Hugging Face does (Python strings are valid)
  if (!utf8::is_valid(text)) {
    repaired = utf8::replace_invalid(text);
    text = repaired;
  }
  const Impl& impl = *impl_;
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  auto encode_word = [&](std::string_view word, bool) { impl.model->tokenize(word, ids); };
  std::string normalized;
  impl.added.split(text, /*normalized_set=*/false, [&](std::string_view piece, size_t offset, int32_t id) {
    if (id >= 0) {
      ids.push_back(id);
      return;
    }
    std::string_view view = piece;
    if (impl.normalizer) {
      normalized.assign(piece);
      impl.normalizer->normalize(normalized);
      view = normalized;
    }
    impl.added.split(view, /*normalized_set=*/true, [&](std::string_view sub, size_t sub_offset, int32_t sub_id) {
      if (sub_id >= 0) {
        ids.push_back(sub_id);
        return;
      }
      bool at_start = offset == 0 && sub_offset == 0;
      if (impl.pre_tokenizer) impl.pre_tokenizer->split(sub, at_start, encode_word);
      else impl.model->tokenize(sub, ids);
    });
  });
  if (impl.post_processor) impl.post_processor->process(ids, add_special_tokens);
  return ids;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  const Impl& impl = *impl_;
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    const std::string* token = nullptr;
    if (const auto* added = impl.added.by_id(id)) token = &added->surface;
    else token = impl.model->id_to_token(id);
    if (!token) continue;
    if (skip_special_tokens && impl.added.is_special_content(*token)) continue;
    tokens.push_back(*token);
  }
  std::string out;
  if (impl.decoder) {
    impl.decoder->decode_chain(tokens);
    for (const auto& t : tokens) out += t;
  } else {
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i) out += ' ';
      out += tokens[i];
    }
  }
  return out;
}

int32_t Tokenizer::token_to_id(std::string_view token) const {
  if (const auto* added = impl_->added.by_content(token)) return added->id;
  return impl_->model->token_to_id(token).value_or(kNoToken);
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
  if (const auto* added = impl_->added.by_id(id)) return added->surface;
  if (const std::string* token = impl_->model->id_to_token(id)) return *token;
  return std::nullopt;
}

bool Tokenizer::is_special(int32_t id) const {
  const auto* added = impl_->added.by_id(id);
  return added && added->special;
}

std::vector<int32_t> Tokenizer::special_token_ids() const {
  std::vector<int32_t> ids;
  for (const auto& token : impl_->added.tokens()) {
    if (token.special) ids.push_back(token.id);
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

int Tokenizer::vocab_size() const { return impl_->max_id + 1; }

}  // namespace moetune
