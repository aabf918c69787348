#include "tokenizer/added_vocabulary.h"

#include <algorithm>

#include "tokenizer/utf8.h"

namespace moetune::tokenizer {

void AddedVocabulary::Trie::insert(std::string_view pattern, int32_t token) {
  if (pattern.empty()) return;
  first_byte[static_cast<unsigned char>(pattern[0])] = true;
  int32_t node = 0;
  for (char ch : pattern) {
    auto byte = static_cast<unsigned char>(ch);
    auto& children = nodes[node].children;
    auto it = std::lower_bound(children.begin(), children.end(), byte,
                               [](const std::pair<unsigned char, int32_t>& c, unsigned char b) { return c.first < b; });
    if (it != children.end() && it->first == byte) {
      node = it->second;
    } else {
      auto next = static_cast<int32_t>(nodes.size());
      children.insert(it, {byte, next});
      nodes.emplace_back();
      node = next;
    }
  }
  if (nodes[node].token < 0) nodes[node].token = token;  // the same pattern twice: the first one wins
}

size_t AddedVocabulary::Trie::longest_at(std::string_view text, size_t at, int32_t& token) const {
  token = -1;
  size_t best = 0;
  int32_t node = 0;
  for (size_t k = at; k < text.size(); ++k) {
    auto byte = static_cast<unsigned char>(text[k]);
    const auto& children = nodes[node].children;
    auto it = std::lower_bound(children.begin(), children.end(), byte,
                               [](const std::pair<unsigned char, int32_t>& c, unsigned char b) { return c.first < b; });
    if (it == children.end() || it->first != byte) break;
    node = it->second;
    if (nodes[node].token >= 0) {
      token = nodes[node].token;
      best = k + 1 - at;
    }
  }
  return best;
}

void AddedVocabulary::build(std::vector<AddedToken> tokens, const std::vector<std::string>& patterns) {
  tokens_ = std::move(tokens);
  // HF builds each matcher from the special tokens first, then the others, each group in file order.
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t i = 0; i < tokens_.size(); ++i) {
      const AddedToken& t = tokens_[i];
      if (t.special != (pass == 0)) continue;
      (t.normalized ? normalized_ : raw_).insert(patterns[i], static_cast<int32_t>(i));
    }
  }
  for (size_t i = 0; i < tokens_.size(); ++i) {
    by_id_[tokens_[i].id] = i;
    by_content_[tokens_[i].content] = i;
    if (tokens_[i].special) special_contents_.insert(tokens_[i].content);
  }
}

const AddedToken* AddedVocabulary::by_id(int32_t id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

const AddedToken* AddedVocabulary::by_content(std::string_view content) const {
  auto it = by_content_.find(std::string(content));
  return it == by_content_.end() ? nullptr : &tokens_[it->second];
}

namespace {

bool ends_with_word(std::string_view text) {
  if (text.empty()) return false;
  size_t end = text.size();
  return utf8::is_word(utf8::previous(text, end));
}

bool starts_with_word(std::string_view text) {
  if (text.empty()) return false;
  size_t at = 0;
  return utf8::is_word(utf8::next(text, at));
}

// Start of the whitespace run that ends `text` (HF: the match of \s*$).
size_t trailing_space_start(std::string_view text) {
  size_t end = text.size();
  while (end > 0) {
    size_t before = end;
    if (!utf8::is_white_space(utf8::previous(text, before))) break;
    end = before;
  }
  return end;
}

// Length of the whitespace run that starts `text` (HF: the match of ^\s*).
size_t leading_space_length(std::string_view text) {
  size_t at = 0;
  while (at < text.size()) {
    size_t after = at;
    if (!utf8::is_white_space(utf8::next(text, after))) break;
    at = after;
  }
  return at;
}

}  // namespace

void AddedVocabulary::split(std::string_view text, bool normalized_set, EmitPiece emit) const {
  if (text.empty()) return;
  const Trie& trie = normalized_set ? normalized_ : raw_;
  if (trie.empty()) {
    emit(text, 0, -1);
    return;
  }
  // HF's find_matches over the leftmost-longest, non-overlapping matches.
  size_t start_offset = 0;
  size_t search = 0;
  while (search < text.size()) {
    if (!trie.first_byte[static_cast<unsigned char>(text[search])]) {
      ++search;
      continue;
    }
    int32_t index;
    size_t length = trie.longest_at(text, search, index);
    if (length == 0) {
      ++search;
      continue;
    }
    size_t start = search, stop = search + length;
    search = stop;  // the next match is looked for after this one, whatever the flags below do
    const AddedToken& token = tokens_[index];
    if (token.single_word) {
      bool start_space = start == 0 || !ends_with_word(text.substr(0, start));
      bool stop_space = stop == text.size() || !starts_with_word(text.substr(stop));
      if (!start_space || !stop_space) continue;
    }
    if (token.lstrip) start = std::max(trailing_space_start(text.substr(0, start)), start_offset);
    if (token.rstrip) stop += leading_space_length(text.substr(stop));
    if (start_offset < start) emit(text.substr(start_offset, start - start_offset), start_offset, -1);
    emit(text.substr(start, stop - start), start, token.id);
    start_offset = stop;
  }
  if (start_offset < text.size()) emit(text.substr(start_offset), start_offset, -1);
}

}  // namespace moetune::tokenizer
