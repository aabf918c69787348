// Why: Hugging Face tokenizers work on Rust strings, which are always valid UTF-8, and Python hands them `str`, which
// cannot hold invalid UTF-8 at all. moetune takes bytes, so the tokenizer first makes them valid the way Python's
// `bytes.decode("utf-8", errors="replace")` does: every maximal invalid subpart (Unicode 15, section 3.9, "U+FFFD
// substitution of maximal subparts") becomes one U+FFFD. Rust's `String::from_utf8_lossy`, which HF's ByteLevel decoder
// uses, follows the same rule, so one function serves encode and decode. The character classes here are the ones of
// Rust's `regex` crate (`\s`, `\w`), which HF uses for the single_word / lstrip / rstrip flags of added tokens.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace moetune::utf8 {

inline constexpr char32_t kReplacement = 0xFFFD;

// Number of bytes of the UTF-8 sequence led by `lead` (1 for ASCII and for bytes that cannot lead one).
inline size_t sequence_length(unsigned char lead) {
  if (lead < 0xC0) return 1;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  return lead < 0xF8 ? 4 : 1;
}

// Decodes the character at text[at] (text must be valid UTF-8); advances `at` past it.
char32_t next(std::string_view text, size_t& at);
// Decodes the character that ends at text[end) (text must be valid UTF-8); moves `end` to its first byte.
char32_t previous(std::string_view text, size_t& end);

void append(std::string& out, char32_t c);

// True when `text` is valid UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF).
bool is_valid(std::string_view text);

// `text` with each maximal invalid subpart replaced by U+FFFD (Python's errors="replace", Rust's from_utf8_lossy).
std::string replace_invalid(std::string_view text);

// Unicode White_Space (Rust regex `\s`, Oniguruma `\s`, Rust char::is_whitespace).
bool is_white_space(char32_t c);
// Rust regex `\w`: Alphabetic, Mark, Decimal_Number, Connector_Punctuation, Join_Control.
bool is_word(char32_t c);

}  // namespace moetune::utf8
