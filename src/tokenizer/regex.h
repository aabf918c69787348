// Why: HF tokenizers runs the regexes of tokenizer.json (Split patterns, the ByteLevel GPT-2 pattern, Replace patterns)
// with Oniguruma in Ruby syntax. moetune runs them with PCRE2 (UTF mode, JIT-compiled when available) after rewriting
// what the two engines do not share:
//   - character classes: \p{...} \P{...} \p{^...} \pL, \s \S, \w \W, \d \D become explicit code point ranges
//     measured from HF itself (unicode_classes.inc, written by tools/tokenizer/make_unicode_tables.py), because
//     Oniguruma's Unicode data (16.0 in tokenizers 0.23.3) is newer than PCRE2's (14.0 in Debian 12), and PCRE2's \s
//     misses U+0085 and its \p{Han} follows Script_Extensions; a property outside those tables is an error;
//   - \h \H are hexadecimal digits in Oniguruma (horizontal space in PCRE2); \b \B use Oniguruma's \w;
//     \uHHHH becomes \x{HHHH}; '.' excludes only "\n" in both once PCRE2's newline is set to LF.
// Constructs whose meaning differs and that no tokenizer we know uses (`^`, `$` outside a class, nested classes,
// class intersection, inline options other than i/x/-) are refused with an error naming the file and JSON path.
// Matches are enumerated as the `onig` crate's find_iter does (an empty match right after the previous match is
// skipped by one character).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "tokenizer/function_ref.h"
#include "tokenizer/json_path.h"

namespace moetune::tokenizer {

class Regex {
 public:
  // A pattern in Oniguruma/Ruby syntax, as tokenizer.json holds it; `where` locates it for error messages.
  static Regex oniguruma(const std::string& pattern, const tokenizer_json::JsonAt& where);
  // A literal string (HF's `{"String": ...}` patterns).
  static Regex literal(const std::string& text);

  // Calls on_match(start, end) for every match in `text` (valid UTF-8), left to right, as onig's find_iter.
  void for_each_match(std::string_view text, FunctionRef<void(size_t, size_t)> on_match) const;

  // The PCRE2 pattern actually compiled (for tests and error messages).
  const std::string& translated() const { return translated_; }

 private:
  static Regex compile(const std::string& pcre_pattern, unsigned options, const std::string& where_text);

  std::shared_ptr<void> code_;  // pcre2_code_8, freed with pcre2_code_free_8
  std::string translated_;
};

// Rewrites an Oniguruma (Ruby syntax) pattern into an equivalent PCRE2 pattern; fails through `where`.
std::string translate_oniguruma(const std::string& pattern, const tokenizer_json::JsonAt& where);

}  // namespace moetune::tokenizer
