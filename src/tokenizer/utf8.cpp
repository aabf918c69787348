#include "tokenizer/utf8.h"

#include <unicode/uchar.h>

namespace moetune::utf8 {

char32_t next(std::string_view text, size_t& at) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  unsigned char b = s[at];
  if (b < 0x80) {
    ++at;
    return b;
  }
  if (b < 0xE0) {
    char32_t c = ((b & 0x1Fu) << 6) | (s[at + 1] & 0x3Fu);
    at += 2;
    return c;
  }
  if (b < 0xF0) {
    char32_t c = ((b & 0x0Fu) << 12) | ((s[at + 1] & 0x3Fu) << 6) | (s[at + 2] & 0x3Fu);
    at += 3;
    return c;
  }
  char32_t c = ((b & 0x07u) << 18) | ((s[at + 1] & 0x3Fu) << 12) | ((s[at + 2] & 0x3Fu) << 6) | (s[at + 3] & 0x3Fu);
  at += 4;
  return c;
}

char32_t previous(std::string_view text, size_t& end) {
  size_t start = end - 1;
  while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
  size_t at = start;
  char32_t c = next(text, at);
  end = start;
  return c;
}

void append(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

namespace {

// Length of the valid sequence at s[at] (0 if invalid) and, through `subpart`, the length of its longest valid prefix
// (the maximal subpart that one U+FFFD replaces; at least 1). Table 3-7 of the Unicode standard.
size_t valid_sequence(const unsigned char* s, size_t size, size_t at, size_t& subpart) {
  unsigned char b = s[at];
  subpart = 1;
  if (b < 0x80) return 1;
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
  if (b >= 0xC2 && b <= 0xDF) {
    need = 2;
  } else if (b >= 0xE0 && b <= 0xEF) {
    need = 3;
    if (b == 0xE0) lo = 0xA0;
    if (b == 0xED) hi = 0x9F;
  } else if (b >= 0xF0 && b <= 0xF4) {
    need = 4;
    if (b == 0xF0) lo = 0x90;
    if (b == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  for (size_t k = 1; k < need; ++k) {
    if (at + k >= size) return 0;
    unsigned char c = s[at + k];
    unsigned char low = k == 1 ? lo : 0x80, high = k == 1 ? hi : 0xBF;
    if (c < low || c > high) return 0;
    subpart = k + 1;
  }
  return need;
}

}  // namespace

bool is_valid(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  size_t n = text.size(), at = 0, subpart;
  while (at < n) {
    if (s[at] < 0x80) {
      ++at;
      continue;
    }
    size_t len = valid_sequence(s, n, at, subpart);
    if (len == 0) return false;
    at += len;
  }
  return true;
}

std::string replace_invalid(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  size_t n = text.size(), at = 0, subpart;
  std::string out;
  out.reserve(n + 8);
  while (at < n) {
    size_t len = valid_sequence(s, n, at, subpart);
    if (len > 0) {
      out.append(text.substr(at, len));
      at += len;
    } else {
      append(out, kReplacement);
      at += subpart;
    }
  }
  return out;
}

bool is_white_space(char32_t c) { return u_isUWhiteSpace(static_cast<UChar32>(c)); }

bool is_word(char32_t c) {
  auto u = static_cast<UChar32>(c);
  if (u_hasBinaryProperty(u, UCHAR_ALPHABETIC) || u_hasBinaryProperty(u, UCHAR_JOIN_CONTROL)) return true;
  switch (u_charType(u)) {
    case U_NON_SPACING_MARK:
    case U_ENCLOSING_MARK:
    case U_COMBINING_SPACING_MARK:
    case U_DECIMAL_DIGIT_NUMBER:
    case U_CONNECTOR_PUNCTUATION:
      return true;
    default:
      return false;
  }
}

}  // namespace moetune::utf8
