// Why: "added_tokens" (<|im_start|>, <s>, <think>, runs of spaces in GPT-NeoX, ...) are found in the text before
// anything else and never reach the BPE model. As in HF's AddedVocabulary:
//   - tokens with normalized=false are matched on the raw text; tokens with normalized=true on each normalized piece
//     left between the first ones, against their own *normalized* content;
//   - matching is leftmost-longest (HF uses Aho-Corasick with MatchKind::LeftmostLongest), non-overlapping;
//   - single_word drops a match that touches a word character (Rust regex \w) on either side, lstrip/rstrip make the
//     token swallow the whitespace (Unicode White_Space) to its left/right;
//   - an added token whose content is a vocab token takes that id; the others take ids after the vocab, in order;
//   - decoding (and id_to_token) sees a normalized token as its normalized content (HF's normalized_cache: Mixtral's
//     normalizer turns "[INST]" into "▁[INST]", which the decoder then turns back into " [INST]").
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "tokenizer/function_ref.h"

namespace moetune::tokenizer {

struct AddedToken {
  std::string content;
  std::string surface;  // what decode sees: the normalized content when normalized, else the content
  int32_t id = -1;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
  bool special = false;
};

// Receives consecutive pieces of a text: token_id >= 0 for an added token, -1 for text in between (never empty).
using EmitPiece = FunctionRef<void(std::string_view piece, size_t offset, int32_t token_id)>;

class AddedVocabulary {
 public:
  // `tokens` in file order with their ids assigned; `patterns` holds each token's matching text (its content, or its
  // normalized content when normalized is true).
  void build(std::vector<AddedToken> tokens, const std::vector<std::string>& patterns);

  // Splits `text` on the tokens with normalized == `normalized_set`.
  void split(std::string_view text, bool normalized_set, EmitPiece emit) const;

  const AddedToken* by_id(int32_t id) const;
  const AddedToken* by_content(std::string_view content) const;
  bool is_special_content(std::string_view content) const { return special_contents_.count(std::string(content)) > 0; }
  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  // A byte trie; node 0 is the root. `token` is the index into tokens_ of the pattern ending here, or -1.
  struct Trie {
    struct Node {
      std::vector<std::pair<unsigned char, int32_t>> children;  // sorted by byte
      int32_t token = -1;
    };
    std::vector<Node> nodes{Node{}};
    bool first_byte[256] = {};
    bool empty() const { return nodes.size() == 1; }
    void insert(std::string_view pattern, int32_t token);
    // Length of the longest pattern starting at text[at], and its token (-1 when none).
    size_t longest_at(std::string_view text, size_t at, int32_t& token) const;
  };

  std::vector<AddedToken> tokens_;
  Trie raw_;
  Trie normalized_;
  std::unordered_map<int32_t, size_t> by_id_;
  std::unordered_map<std::string, size_t> by_content_;
  std::unordered_set<std::string> special_contents_;
};

}  // namespace moetune::tokenizer
