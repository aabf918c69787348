#include "tokenizer/normalizer.h"

#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/stringpiece.h>
#include <unicode/uniset.h>
#include <unicode/unistr.h>

#include <vector>

namespace moetune::tokenizer {

using tokenizer_json::JsonAt;

Regex make_pattern(const JsonAt& pattern) {
  pattern.expect_object();
  if (pattern.has("String")) return Regex::literal(pattern.at("String").as_string());
  if (pattern.has("Regex")) return Regex::oniguruma(pattern.at("Regex").as_string(), pattern.at("Regex"));
  pattern.fail("expected {\"String\": ...} or {\"Regex\": ...}, found ", pattern.json().dump());
}

std::string replace_matches(const Regex& pattern, std::string_view text, std::string_view content) {
  std::string out;
  out.reserve(text.size());
  size_t previous = 0;
  pattern.for_each_match(text, [&](size_t start, size_t end) {
    out.append(text.substr(previous, start - previous));
    out.append(content);
    previous = end;
  });
  out.append(text.substr(previous));
  return out;
}

namespace {

// HF's NFC (the unicode-normalization-alignments crate) uses Unicode 9.0 data: characters assigned later have no
// decomposition and combining class 0 there, so they are neither reordered nor decomposed. ICU reproduces that with a
// filter on [:age=9.0:] (checked over every code point, alone and before U+0334: identical to HF 0.23.3).
const icu::Normalizer2& hf_nfc(const JsonAt& spec) {
  static const icu::Normalizer2* nfc = [&]() -> const icu::Normalizer2* {
    UErrorCode status = U_ZERO_ERROR;
    const icu::Normalizer2* full = icu::Normalizer2::getNFCInstance(status);
    if (U_FAILURE(status)) return nullptr;
    auto* unicode9 = new icu::UnicodeSet(icu::UnicodeString("[:age=9.0:]", -1, US_INV), status);
    if (U_FAILURE(status)) return nullptr;
    unicode9->freeze();
    return new icu::FilteredNormalizer2(*full, *unicode9);  // both live for the whole process
  }();
  if (!nfc) spec.fail("ICU cannot provide NFC restricted to Unicode 9.0");
  return *nfc;
}

class Nfc final : public Normalizer {
 public:
  explicit Nfc(const JsonAt& spec) : nfc_(&hf_nfc(spec)) {}
  void normalize(std::string& text) const override {
    bool ascii = true;
    for (char c : text) ascii = ascii && static_cast<unsigned char>(c) < 0x80;
    if (ascii) return;
    UErrorCode status = U_ZERO_ERROR;
    icu::StringPiece piece(text.data(), static_cast<int32_t>(text.size()));
    if (nfc_->isNormalizedUTF8(piece, status) && U_SUCCESS(status)) return;
    std::string out;
    icu::StringByteSink<std::string> sink(&out, static_cast<int32_t>(text.size()));
    status = U_ZERO_ERROR;
    nfc_->normalizeUTF8(0, piece, sink, nullptr, status);
    if (U_FAILURE(status)) fail("NFC normalization failed: ", u_errorName(status));
    text.swap(out);
  }

 private:
  const icu::Normalizer2* nfc_;
};

class Prepend final : public Normalizer {
 public:
  explicit Prepend(const JsonAt& spec) : prepend_(spec.at("prepend").as_string()) {}
  void normalize(std::string& text) const override {
    if (!text.empty()) text.insert(0, prepend_);
  }

 private:
  std::string prepend_;
};

class Replace final : public Normalizer {
 public:
  explicit Replace(const JsonAt& spec)
      : pattern_(make_pattern(spec.at("pattern"))), content_(spec.at("content").as_string()) {}
  void normalize(std::string& text) const override { text = replace_matches(pattern_, text, content_); }

 private:
  Regex pattern_;
  std::string content_;
};

class Sequence final : public Normalizer {
 public:
  explicit Sequence(const JsonAt& spec) {
    JsonAt list = spec.at("normalizers");
    list.expect_array();
    for (size_t i = 0; i < list.size(); ++i) steps_.push_back(make_normalizer(list.at(i)));
  }
  void normalize(std::string& text) const override {
    for (const auto& step : steps_) step->normalize(text);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const JsonAt& spec) {
  std::string type = spec.at("type").as_string();
  if (type == "NFC") return std::make_unique<Nfc>(spec);
  if (type == "Prepend") return std::make_unique<Prepend>(spec);
  if (type == "Replace") return std::make_unique<Replace>(spec);
  if (type == "Sequence") return std::make_unique<Sequence>(spec);
  spec.at("type").fail("normalizer type \"", type, "\" is not supported (moetune implements NFC, Prepend, Replace, ",
                       "Sequence); encoding without it would give other ids than Hugging Face");
}

}  // namespace moetune::tokenizer
