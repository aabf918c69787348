// Why: see token_offsets.h.
#include "dataset/token_offsets.h"

#include <algorithm>
#include <limits>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "core/error.h"
#include "tokenizer/utf8.h"

namespace moetune {

namespace {

bool mentions_byte_level(const nlohmann::json& node) {
  if (node.is_object()) {
    if (node.contains("type") && node["type"] == "ByteLevel") return true;
    for (const auto& [key, value] : node.items())
      if ((key == "pretokenizers" || key == "decoders") && mentions_byte_level(value)) return true;
  }
  if (node.is_array())
    for (const auto& item : node)
      if (mentions_byte_level(item)) return true;
  return false;
}

// GPT-2's bytes_to_unicode, inverted: code point -> byte.
std::unordered_map<char32_t, unsigned char> byte_level_decoder() {
  std::vector<int> bytes;
  for (int b = '!'; b <= '~'; ++b) bytes.push_back(b);
  for (int b = 0xA1; b <= 0xAC; ++b) bytes.push_back(b);
  for (int b = 0xAE; b <= 0xFF; ++b) bytes.push_back(b);
  std::vector<char32_t> chars(bytes.begin(), bytes.end());
  int extra = 0;
  for (int b = 0; b < 256; ++b)
    if (std::find(bytes.begin(), bytes.end(), b) == bytes.end()) {
      bytes.push_back(b);
      chars.push_back(static_cast<char32_t>(256 + extra++));
    }
  std::unordered_map<char32_t, unsigned char> inverse;
  for (size_t i = 0; i < bytes.size(); ++i) inverse[chars[i]] = static_cast<unsigned char>(bytes[i]);
  return inverse;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

std::string spm_piece(const std::string& token) {
  if (token.size() == 6 && token.compare(0, 3, "<0x") == 0 && token[5] == '>' && hex_digit(token[3]) >= 0 &&
      hex_digit(token[4]) >= 0)
    return std::string(1, static_cast<char>(hex_digit(token[3]) * 16 + hex_digit(token[4])));
  std::string out;
  static const std::string kSpace = "\xE2\x96\x81";  // U+2581
  for (size_t i = 0; i < token.size();) {
    if (token.compare(i, kSpace.size(), kSpace) == 0) {
      out += ' ';
      i += kSpace.size();
    } else {
      out += token[i++];
    }
  }
  return out;
}

bool space_at(std::string_view text, size_t at, size_t* length) {
  size_t next = at;
  const char32_t c = utf8::next(text, next);
  *length = next - at;
  return utf8::is_white_space(c);
}

size_t char_length(std::string_view text, size_t at) {
  if (at >= text.size()) return 0;
  return std::min(utf8::sequence_length(static_cast<unsigned char>(text[at])), text.size() - at);
}

}  // namespace

TokenAligner::TokenAligner(const Tokenizer& tokenizer, std::string_view tokenizer_json, const std::string& source) {
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(tokenizer_json);
  } catch (const nlohmann::json::parse_error& error) {
    fail(source, ": malformed JSON (", error.what(), ")");
  }
  byte_level_ = (json.contains("pre_tokenizer") && mentions_byte_level(json["pre_tokenizer"])) ||
                (json.contains("decoder") && mentions_byte_level(json["decoder"]));
  std::unordered_map<int64_t, std::string> added;
  if (json.contains("added_tokens") && json["added_tokens"].is_array())
    for (const auto& token : json["added_tokens"])
      if (token.is_object() && token.contains("id") && token["id"].is_number_integer() && token.contains("content") &&
          token["content"].is_string())
        added[token["id"].get<int64_t>()] = token["content"].get<std::string>();
  const auto byte_map = byte_level_ ? byte_level_decoder() : std::unordered_map<char32_t, unsigned char>{};
  pieces_.resize(static_cast<size_t>(tokenizer.vocab_size()));
  for (int32_t id = 0; id < tokenizer.vocab_size(); ++id) {
    if (auto it = added.find(id); it != added.end()) {
      pieces_[static_cast<size_t>(id)] = it->second;
      continue;
    }
    const std::optional<std::string> token = tokenizer.id_to_token(id);
    if (!token) continue;
    if (!byte_level_) {
      pieces_[static_cast<size_t>(id)] = spm_piece(*token);
      continue;
    }
    std::string bytes;
    const std::string& text = *token;
    for (size_t at = 0; at < text.size();) {
      const size_t start = at;
      const char32_t c = utf8::next(text, at);
      if (auto found = byte_map.find(c); found != byte_map.end()) bytes += static_cast<char>(found->second);
      else bytes.append(text, start, at - start);
    }
    pieces_[static_cast<size_t>(id)] = std::move(bytes);
  }
}

const std::string& TokenAligner::piece(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= pieces_.size()) return empty_;
  return pieces_[static_cast<size_t>(id)];
}

std::vector<TokenRange> TokenAligner::offsets(std::string_view text, const std::vector<int32_t>& ids) const {
  // The normalized text as the tokens spell it, and which token each of its bytes belongs to.
  std::string normalized;
  std::vector<uint32_t> owner;
  for (size_t k = 0; k < ids.size(); ++k) {
    const std::string& bytes = piece(ids[k]);
    normalized += bytes;
    owner.insert(owner.end(), bytes.size(), static_cast<uint32_t>(k));
  }
  constexpr uint32_t kNone = std::numeric_limits<uint32_t>::max();
  std::vector<TokenRange> ranges(ids.size(), TokenRange{kNone, 0});
  auto cover = [&](size_t j, size_t begin, size_t end) {
    TokenRange& r = ranges[owner[j]];
    if (end <= begin) {
      if (r.begin == kNone) r.begin = r.end = static_cast<uint32_t>(begin);
      return;
    }
    if (r.begin == kNone || r.end <= r.begin) {
      r.begin = static_cast<uint32_t>(begin);
      r.end = static_cast<uint32_t>(end);
    } else {
      r.begin = std::min(r.begin, static_cast<uint32_t>(begin));
      r.end = std::max(r.end, static_cast<uint32_t>(end));
    }
  };
  const std::string_view n = normalized;
  size_t i = 0, j = 0;
  while (j < n.size()) {
    if (n[j] == ' ') {
      size_t k = 0, m = 0;
      while (j + k < n.size() && n[j + k] == ' ') ++k;
      while (i + m < text.size() && text[i + m] == ' ') ++m;
      if (k == m + 1) {  // a prepended "▁": it takes the offsets of the character it precedes
        cover(j, i, i + char_length(text, i));
        ++j;
        continue;
      }
    }
    if (i < text.size() && n[j] == text[i]) {
      cover(j, i, i + 1);
      ++i;
      ++j;
      continue;
    }
    size_t length = 0;
    if (i < text.size() && space_at(text, i, &length)) {  // whitespace no token spells (stripped around an added token)
      i += length;
      continue;
    }
    // Resynchronise: the nearest (dj, di) after which 4 bytes (or both ends) agree again.
    bool found = false;
    size_t best_dj = 0, best_di = 0;
    for (size_t total = 1; total <= 128 && !found; ++total)
      for (size_t dj = 0; dj <= total && !found; ++dj) {
        const size_t di = total - dj;
        if (j + dj > n.size() || i + di > text.size()) continue;
        const size_t left_n = n.size() - (j + dj), left_t = text.size() - (i + di);
        if (left_n == 0 && left_t == 0) {
          found = true;
        } else if (left_n > 0 && left_t > 0) {
          const size_t probe = std::min<size_t>({4, left_n, left_t});
          found = (probe == 4 || (probe == left_n && probe == left_t)) && n.substr(j + dj, probe) == text.substr(i + di, probe);
        }
        if (found) {
          best_dj = dj;
          best_di = di;
        }
      }
    if (!found) {
      best_dj = n.size() - j;
      best_di = text.size() - i;
    }
    for (size_t q = j; q < j + best_dj; ++q) cover(q, i, i + best_di);
    j += best_dj;
    i += best_di;
  }
  for (TokenRange& r : ranges)
    if (r.begin == kNone) r = TokenRange{static_cast<uint32_t>(text.size()), static_cast<uint32_t>(text.size())};
  return ranges;
}

int64_t first_token_at(const std::vector<TokenRange>& offsets, std::string_view text, size_t at) {
  if (at >= text.size()) return -1;
  const size_t end = at + char_length(text, at);
  for (size_t k = 0; k < offsets.size(); ++k)
    if (offsets[k].begin < end && offsets[k].end > at) return static_cast<int64_t>(k);
  return -1;
}

void mark_spans(std::vector<uint8_t>& mask, const std::vector<TokenRange>& offsets, std::string_view text,
                const std::vector<std::pair<size_t, size_t>>& spans) {
  mask.assign(offsets.size(), 0);
  for (const auto& [begin, end] : spans) {
    if (end <= begin) continue;
    const int64_t first = first_token_at(offsets, text, begin);
    if (first < 0) break;
    size_t last_char = end;
    utf8::previous(text.substr(0, end), last_char);
    const int64_t last = first_token_at(offsets, text, last_char);
    const size_t stop = last > 0 ? static_cast<size_t>(last) + 1 : offsets.size();
    for (size_t k = static_cast<size_t>(first); k < stop; ++k) mask[k] = 1;
  }
}

}  // namespace moetune
