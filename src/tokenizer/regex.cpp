#include "tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <map>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "tokenizer/utf8.h"

namespace moetune::tokenizer {

#include "tokenizer/unicode_classes.inc"

namespace {

using Ranges = std::vector<std::pair<char32_t, char32_t>>;

Ranges ranges_of(const UnicodeClass& c) {
  Ranges out;
  for (size_t i = 0; i < c.range_count; ++i) out.emplace_back(c.ranges[2 * i], c.ranges[2 * i + 1]);
  return out;
}

// The code points not in `in` (sorted, disjoint), without the surrogates, which PCRE2's UTF mode cannot name.
Ranges complement(const Ranges& in) {
  Ranges out;
  char32_t next = 0;
  auto add = [&](char32_t lo, char32_t hi) {
    if (lo > hi) return;
    if (lo <= 0xDFFF && hi >= 0xD800) {
      if (lo < 0xD800) out.emplace_back(lo, 0xD7FF);
      if (hi > 0xDFFF) out.emplace_back(0xE000, hi);
      return;
    }
    out.emplace_back(lo, hi);
  };
  for (const auto& [lo, hi] : in) {
    if (lo > next) add(next, lo - 1);
    next = hi + 1;
  }
  if (next <= 0x10FFFF) add(next, 0x10FFFF);
  return out;
}

// Class items for PCRE2: "\x{41}-\x{5A}\x{61}..." (to go inside [...]).
std::string class_items(const Ranges& ranges) {
  std::string out;
  char buffer[32];
  for (const auto& [lo, hi] : ranges) {
    if (lo == hi) std::snprintf(buffer, sizeof(buffer), "\\x{%X}", static_cast<unsigned>(lo));
    else std::snprintf(buffer, sizeof(buffer), "\\x{%X}-\\x{%X}", static_cast<unsigned>(lo), static_cast<unsigned>(hi));
    out += buffer;
  }
  return out;
}

// The set difference a \ b of two sorted, disjoint range lists.
Ranges subtract(const Ranges& a, const Ranges& b) {
  Ranges out;
  size_t j = 0;
  for (const auto& [lo, hi] : a) {
    while (j < b.size() && b[j].second < lo) ++j;
    char32_t current = lo;
    for (size_t k = j; k < b.size() && b[k].first <= hi; ++k) {
      if (b[k].first > current) out.emplace_back(current, b[k].first - 1);
      current = std::max<char32_t>(current, b[k].second + 1);
      if (current > hi) break;
    }
    if (current <= hi) out.emplace_back(current, hi);
  }
  return out;
}

// What PCRE2 matches for the class items `items`, over every code point; nullopt when PCRE2 cannot compile them.
std::optional<Ranges> pcre2_ranges(const std::string& items) {
  static const std::string every_code_point = [] {
    std::string text;
    for (char32_t c = 0; c <= 0x10FFFF; ++c) {
      if (c < 0xD800 || c > 0xDFFF) utf8::append(text, c);
    }
    return text;
  }();
  std::string pattern = "[" + items + "]+";
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP,
                                   &error, &offset, nullptr);
  if (!code) return std::nullopt;
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
  Ranges out;
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(every_code_point.data());
  size_t at = 0;
  while (at < every_code_point.size() &&
         pcre2_match(code, subject, every_code_point.size(), at, PCRE2_NO_UTF_CHECK, data, nullptr) > 0) {
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data);
    size_t start = ovector[0], end = ovector[1];
    char32_t first = utf8::next(every_code_point, start);
    char32_t last = utf8::previous(every_code_point, end);
    if (!out.empty() && out.back().second + 1 == first) out.back().second = last;  // across the surrogate gap
    else out.emplace_back(first, last);
    at = ovector[1];
  }
  pcre2_match_data_free(data);
  pcre2_code_free(code);
  return out;
}

// Class items for HF's class `c`. PCRE2's own items (c.native) match faster than hundreds of explicit ranges, so
// when PCRE2's data holds nothing that HF's lacks, they are used with the code points PCRE2 lacks (the characters of
// newer Unicode versions) added explicitly; otherwise the explicit ranges. Measured once per class and process.
const std::string& class_items_for(const UnicodeClass& c) {
  static std::mutex mutex;
  static std::map<const UnicodeClass*, std::string> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(&c);
  if (it != cache.end()) return it->second;
  Ranges hf = ranges_of(c);
  std::string items = class_items(hf);
  if (std::optional<Ranges> native = pcre2_ranges(c.native)) {
    if (subtract(*native, hf).empty()) items = c.native + class_items(subtract(hf, *native));
  }
  return cache.emplace(&c, std::move(items)).first->second;
}

// HF's class `c` (or its complement) as a pattern piece: items inside a character class, a bracketed class outside.
std::string class_piece(const UnicodeClass& c, bool negate, bool in_class) {
  if (in_class) return negate ? class_items(complement(ranges_of(c))) : class_items_for(c);
  if (c.range_count == 0) return negate ? "(?s:.)" : "(?!)";
  return (negate ? "[^" : "[") + class_items_for(c) + "]";
}

// Explicit ranges as a pattern piece.
std::string class_piece(const Ranges& ranges, bool in_class) {
  std::string items = class_items(ranges);
  if (in_class) return items;
  return items.empty() ? "(?!)" : "[" + items + "]";
}

const Ranges& hex_digits() {
  static const Ranges ranges = {{'0', '9'}, {'A', 'F'}, {'a', 'f'}};
  return ranges;
}

std::string normalized_property(const std::string& name) {
  std::string out;
  for (char c : name) {
    if (c == ' ' || c == '_' || c == '-') continue;
    out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

const UnicodeClass* find_property(const std::string& name) {
  std::string key = normalized_property(name);
  for (const auto& c : kUnicodeClasses) {
    if (key == c.name) return &c;
  }
  return nullptr;
}

// Per-thread match data (one ovector pair is all we read) and JIT stack: pcre2 objects are not shareable across
// threads while matching, the compiled code is.
struct MatchScratch {
  pcre2_match_data* data = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* jit_stack = nullptr;
  MatchScratch() {
    data = pcre2_match_data_create(1, nullptr);
    context = pcre2_match_context_create(nullptr);
    // PCRE2's default limit (10M backtracking steps) can trip on a multi-megabyte run of whitespace, which HF encodes;
    // the tokenizer patterns backtrack linearly, so no limit is needed.
    pcre2_set_match_limit(context, UINT32_MAX);
    jit_stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
    if (jit_stack) pcre2_jit_stack_assign(context, nullptr, jit_stack);
  }
  ~MatchScratch() {
    pcre2_match_data_free(data);
    pcre2_match_context_free(context);
    if (jit_stack) pcre2_jit_stack_free(jit_stack);
  }
};

MatchScratch& scratch() {
  thread_local MatchScratch s;
  return s;
}

std::string pcre_error(int code) {
  PCRE2_UCHAR buffer[256];
  pcre2_get_error_message(code, buffer, sizeof(buffer));
  return reinterpret_cast<const char*>(buffer);
}

}  // namespace

std::string translate_oniguruma(const std::string& pattern, const tokenizer_json::JsonAt& where) {
  std::string out;
  out.reserve(pattern.size() + 32);
  bool in_class = false;
  size_t class_start = 0;  // index in `pattern` just after '[' or '[^'
  for (size_t i = 0; i < pattern.size(); ++i) {
    char c = pattern[i];
    if (c == '\\') {
      if (i + 1 >= pattern.size()) where.fail("regex ends with a lone backslash: ", pattern);
      char e = pattern[++i];
      switch (e) {
        case 's': out += class_piece(kEscape_s, false, in_class); break;
        case 'S': out += class_piece(kEscape_s, true, in_class); break;
        case 'd': out += class_piece(kEscape_d, false, in_class); break;
        case 'D': out += class_piece(kEscape_d, true, in_class); break;
        case 'w': out += class_piece(kEscape_w, false, in_class); break;
        case 'W': out += class_piece(kEscape_w, true, in_class); break;
        case 'h': out += class_piece(hex_digits(), in_class); break;
        case 'H': out += class_piece(complement(hex_digits()), in_class); break;
        case 'p':
        case 'P': {  // \p{Name}, \p{^Name}, \P{Name}, \pL
          bool negate = e == 'P';
          std::string name;
          if (i + 1 < pattern.size() && pattern[i + 1] == '{') {
            size_t close = pattern.find('}', i + 2);
            if (close == std::string::npos) where.fail("regex has an unterminated \\", e, "{: ", pattern);
            name = pattern.substr(i + 2, close - i - 2);
            i = close;
          } else if (i + 1 < pattern.size()) {
            name = pattern.substr(++i, 1);
          }
          if (!name.empty() && name[0] == '^') {
            negate = !negate;
            name.erase(0, 1);
          }
          const UnicodeClass* property = find_property(name);
          if (!property) {
            where.fail("regex uses \\p{", name, "}, which is not among the Unicode classes moetune measured from ",
                       "Hugging Face (tools/tokenizer/make_unicode_tables.py): ", pattern);
          }
          out += class_piece(*property, negate, in_class);
          break;
        }
        case 'b':  // word boundary outside a class (over Oniguruma's \w), backspace inside one (same in both)
        case 'B': {
          if (in_class) {
            out += '\\';
            out += e;
            break;
          }
          std::string w = class_piece(kEscape_w, false, false);
          std::string boundary = "(?<=" + w + ")(?!" + w + ")|(?<!" + w + ")(?=" + w + ")";
          out += e == 'b' ? "(?:" + boundary + ")" : "(?!" + boundary + ")";
          break;
        }
        case 'u': {  // Ruby's \uHHHH is PCRE2's \x{HHHH}
          std::string hex = pattern.substr(i + 1, 4);
          if (hex.size() != 4 || hex.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) {
            where.fail("regex has \\u without four hexadecimal digits: ", pattern);
          }
          out += "\\x{" + hex + "}";
          i += 4;
          break;
        }
        case 'R': case 'X': case 'K': case 'G': case 'y': case 'Y': case 'O': case 'N':
          where.fail("regex uses \\", e, ", whose Oniguruma meaning moetune does not translate: ", pattern);
        default:
          out += '\\';
          out += e;
      }
      continue;
    }
    if (in_class) {
      if (c == '[') {
        if (pattern.compare(i, 2, "[:") == 0) {  // POSIX class [:alpha:] (same in both engines)
          size_t close = pattern.find(":]", i + 2);
          if (close == std::string::npos) where.fail("regex has an unterminated [: class: ", pattern);
          out.append(pattern, i, close + 2 - i);
          i = close + 1;
          continue;
        }
        where.fail("regex uses a nested character class, which moetune does not translate: ", pattern);
      }
      if (c == '&' && i + 1 < pattern.size() && pattern[i + 1] == '&') {
        where.fail("regex uses class intersection (&&), which moetune does not translate: ", pattern);
      }
      if (c == ']' && i > class_start) in_class = false;
      out += c;
      continue;
    }
    switch (c) {
      case '[':
        in_class = true;
        out += c;
        if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
        class_start = i + 1;  // a ']' right here is a literal
        continue;
      case '^': case '$':
        where.fail("regex uses '", c, "' outside a character class (Ruby's line anchors differ from PCRE2's): ",
                   pattern);
      case '(':
        if (pattern.compare(i, 2, "(?") == 0 && i + 2 < pattern.size()) {
          // Inline options: Oniguruma/Ruby's (?m) is PCRE2's (?s); allow only i, x and '-'.
          size_t j = i + 2;
          if (pattern[j] != ':' && pattern[j] != '=' && pattern[j] != '!' && pattern[j] != '<' && pattern[j] != '>' &&
              pattern[j] != '#') {
            for (; j < pattern.size() && pattern[j] != ':' && pattern[j] != ')'; ++j) {
              if (pattern[j] != 'i' && pattern[j] != 'x' && pattern[j] != '-') {
                where.fail("regex uses inline option '", pattern[j], "', which moetune does not translate: ", pattern);
              }
            }
          }
        }
        out += c;
        continue;
      default:
        out += c;
    }
  }
  if (in_class) where.fail("regex has an unterminated character class: ", pattern);
  return out;
}

Regex Regex::compile(const std::string& pcre_pattern, unsigned options, const std::string& where_text) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  // '.' excludes only "\n" in Oniguruma's Ruby syntax: make PCRE2's newline LF whatever its build default.
  pcre2_compile_context* context = pcre2_compile_context_create(nullptr);
  pcre2_set_newline(context, PCRE2_NEWLINE_LF);
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pcre_pattern.data()), pcre_pattern.size(),
                                   options, &error, &offset, context);
  pcre2_compile_context_free(context);
  if (!code) fail(where_text, "cannot compile regex at offset ", offset, ": ", pcre_error(error), ": ", pcre_pattern);
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // no JIT on this platform: the interpreter gives the same matches
  Regex regex;
  regex.code_ = std::shared_ptr<void>(code, [](void* p) { pcre2_code_free(static_cast<pcre2_code*>(p)); });
  regex.translated_ = pcre_pattern;
  return regex;
}

Regex Regex::oniguruma(const std::string& pattern, const tokenizer_json::JsonAt& where) {
  std::string translated = translate_oniguruma(pattern, where);
  return compile(translated, PCRE2_UTF | PCRE2_UCP, where.file() + ": " + where.path() + ": ");
}

Regex Regex::literal(const std::string& text) { return compile(text, PCRE2_UTF | PCRE2_LITERAL, "literal pattern: "); }

void Regex::for_each_match(std::string_view text, FunctionRef<void(size_t, size_t)> on_match) const {
  auto* code = static_cast<pcre2_code*>(code_.get());
  MatchScratch& s = scratch();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t last_end = 0;
  bool have_last = false;
  size_t last_match_end = 0;
  while (last_end <= text.size()) {
    int rc = pcre2_match(code, subject, text.size(), last_end, PCRE2_NO_UTF_CHECK, s.data, s.context);
    if (rc == PCRE2_ERROR_NOMATCH) return;
    if (rc < 0) fail("tokenizer regex failed (", pcre_error(rc), ") on a text of ", text.size(), " bytes: ", translated_);
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(s.data);
    size_t start = ovector[0], end = ovector[1];
    if (start == end && have_last && last_match_end == end) {
      // onig's find_iter: no empty match right after the previous match; step one character and search again.
      last_end += last_end < text.size() ? utf8::sequence_length(static_cast<unsigned char>(text[last_end])) : 1;
      continue;
    }
    last_end = end;
    have_last = true;
    last_match_end = end;
    on_match(start, end);
  }
}

}  // namespace moetune::tokenizer
