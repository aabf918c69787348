#include "tokenizer/post_processor.h"

#include <map>
#include <string>

namespace moetune::tokenizer {

using tokenizer_json::JsonAt;

namespace {

int32_t token_id(const JsonAt& at) {
  int64_t id = at.as_int();
  if (id < 0 || id > INT32_MAX) at.fail("token id ", id, " is out of range");
  return static_cast<int32_t>(id);
}

// The single-sequence template as a list of pieces: the sequence itself (empty `ids`, is_sequence) or special ids.
class Template final : public PostProcessor {
 public:
  explicit Template(const JsonAt& spec) {
    std::map<std::string, std::vector<int32_t>> specials;
    JsonAt tokens = spec.at("special_tokens");
    tokens.expect_object();
    for (const auto& [name, value] : tokens.json().items()) {
      JsonAt entry(value, spec.file(), tokens.path() + "[" + nlohmann::json(name).dump() + "]");
      JsonAt ids = entry.at("ids");
      ids.expect_array();
      for (size_t i = 0; i < ids.size(); ++i) specials[name].push_back(token_id(ids.at(i)));
    }
    JsonAt single = spec.at("single");
    if (!single.json().is_array()) single.fail("expected the template as a list of pieces, found ", single.type_name());
    for (size_t i = 0; i < single.size(); ++i) {
      JsonAt piece = single.at(i);
      if (piece.has("Sequence")) {
        std::string id = piece.at("Sequence").at("id").as_string();
        if (id != "A") piece.at("Sequence").at("id").fail("a single-sequence template can only hold $A, found $", id);
        pieces_.push_back({true, {}});
      } else if (piece.has("SpecialToken")) {
        JsonAt name_at = piece.at("SpecialToken").at("id");
        std::string name = name_at.as_string();
        auto it = specials.find(name);
        if (it == specials.end()) name_at.fail("special token \"", name, "\" is not in post_processor.special_tokens");
        pieces_.push_back({false, it->second});
      } else {
        piece.fail("expected {\"Sequence\": ...} or {\"SpecialToken\": ...}, found ", piece.json().dump());
      }
    }
  }
  void process(std::vector<int32_t>& ids, bool add_special_tokens) const override {
    if (!add_special_tokens) return;
    std::vector<int32_t> out;
    out.reserve(ids.size() + 4);
    for (const Piece& piece : pieces_) {
      if (piece.is_sequence) out.insert(out.end(), ids.begin(), ids.end());
      else out.insert(out.end(), piece.ids.begin(), piece.ids.end());
    }
    ids.swap(out);
  }

 private:
  struct Piece {
    bool is_sequence;
    std::vector<int32_t> ids;
  };
  std::vector<Piece> pieces_;
};

// RobertaProcessing / BertProcessing: cls $A sep, each given as ["token", id].
class ClsSep final : public PostProcessor {
 public:
  explicit ClsSep(const JsonAt& spec) : cls_(pair_id(spec.at("cls"))), sep_(pair_id(spec.at("sep"))) {}
  void process(std::vector<int32_t>& ids, bool add_special_tokens) const override {
    if (!add_special_tokens) return;
    ids.insert(ids.begin(), cls_);
    ids.push_back(sep_);
  }

 private:
  static int32_t pair_id(const JsonAt& at) {
    if (!at.json().is_array() || at.size() != 2) at.fail("expected [\"token\", id], found ", at.json().dump());
    at.at(size_t{0}).as_string();
    return token_id(at.at(size_t{1}));
  }
  int32_t cls_;
  int32_t sep_;
};

class Nothing final : public PostProcessor {
 public:
  void process(std::vector<int32_t>&, bool) const override {}
};

class Sequence final : public PostProcessor {
 public:
  explicit Sequence(const JsonAt& spec) {
    JsonAt list = spec.at("processors");
    list.expect_array();
    for (size_t i = 0; i < list.size(); ++i) steps_.push_back(make_post_processor(list.at(i)));
  }
  void process(std::vector<int32_t>& ids, bool add_special_tokens) const override {
    for (const auto& step : steps_) step->process(ids, add_special_tokens);
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> steps_;
};

}  // namespace

std::unique_ptr<PostProcessor> make_post_processor(const JsonAt& spec) {
  std::string type = spec.at("type").as_string();
  if (type == "TemplateProcessing") return std::make_unique<Template>(spec);
  if (type == "RobertaProcessing" || type == "BertProcessing") return std::make_unique<ClsSep>(spec);
  if (type == "ByteLevel") return std::make_unique<Nothing>();
  if (type == "Sequence") return std::make_unique<Sequence>(spec);
  spec.at("type").fail("post_processor type \"", type, "\" is not supported (moetune implements TemplateProcessing, ",
                       "RobertaProcessing, BertProcessing, ByteLevel, Sequence)");
}

}  // namespace moetune::tokenizer
