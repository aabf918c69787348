// Why: the "normalizer" of tokenizer.json, applied (as in HF) to each piece of text between added tokens that match
// the raw text, before the normalized added tokens are looked for. Supported: NFC (ICU, restricted to Unicode 9.0 as
// HF's is), Prepend, Replace (string or
// regex pattern), Sequence of those; null means none. Anything else is an error naming the file and JSON path, since a
// normalizer moetune skipped would silently change the ids.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "tokenizer/json_path.h"
#include "tokenizer/regex.h"

namespace moetune::tokenizer {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // `text` is valid UTF-8 and stays so.
  virtual void normalize(std::string& text) const = 0;
};

// `spec` is a non-null normalizer object.
std::unique_ptr<Normalizer> make_normalizer(const tokenizer_json::JsonAt& spec);

// HF's `{"String": s}` / `{"Regex": r}` pattern objects (Split, Replace).
Regex make_pattern(const tokenizer_json::JsonAt& pattern);

// HF's NormalizedString::replace / Replace decoder: every match of `pattern` in `text` replaced by `content`.
std::string replace_matches(const Regex& pattern, std::string_view text, std::string_view content);

}  // namespace moetune::tokenizer
