// Why: a loss mask is defined on text (the assistant's part of a rendered chat, the completion after a prompt) but
// applies to tokens, and the ids must be those of tokenizing the whole text at once (tokenizing pieces separately gives
// other ids at the seams). Transformers maps text to tokens with the offsets HF tokenizers return; moetune's tokenizer
// returns ids only, so this recovers the offsets from the ids: each token's bytes (added tokens: their content;
// byte-level BPE: GPT-2's byte alphabet undone; SentencePiece-style BPE: "▁" read as a space, <0xXX> as byte XX) laid
// along the text. Where the tokenizer changed the text the alignment follows HF's offset rules for the changes moetune's
// tokenizer makes: a prepended "▁" (Prepend normalizer, Metaspace) takes the offsets of the character it precedes
// (in a run of spaces one longer than the text's, the first is the prepended one, as in HF), whitespace an added token
// strips belongs to no token, and anything else that differs (NFC recomposition, unknown tokens) is resynchronised a few
// bytes later and given the whole differing stretch. Offsets are byte ranges of the text.
//
// first_token_at(offsets, byte) is Transformers' BatchEncoding.char_to_token: the first token whose range overlaps the
// character that starts at `byte`.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace moetune {

struct TokenRange {
  uint32_t begin = 0, end = 0;  // bytes [begin, end) of the text; empty when the token stands for no text
};

class TokenAligner {
 public:
  // `tokenizer_json`: the text of the tokenizer.json `tokenizer` was loaded from (Tokenizer::json_in_folder: its model
  // and added tokens); without a ByteLevel step, pieces are read as SentencePiece pieces ("▁" a space, <0xXX> byte XX).
  TokenAligner(const Tokenizer& tokenizer, std::string_view tokenizer_json, const std::string& source);

  // Offsets of `ids` = tokenizer.encode(text, add_special_tokens=false) in `text`.
  std::vector<TokenRange> offsets(std::string_view text, const std::vector<int32_t>& ids) const;

  // The bytes token `id` stands for (what it contributes to the normalized text).
  const std::string& piece(int32_t id) const;
  bool byte_level() const { return byte_level_; }

 private:
  bool byte_level_ = false;
  std::vector<std::string> pieces_;  // (vocab) indexed by id
  std::string empty_;
};

// Transformers' char_to_token: the first token overlapping the character at byte `at` of `text`; -1 when none.
int64_t first_token_at(const std::vector<TokenRange>& offsets, std::string_view text, size_t at);

// Transformers' assistant-mask loop (apply_chat_template with return_assistant_tokens_mask): for each span, the tokens
// from char_to_token(begin) to char_to_token(last character) inclusive get mask 1 (to the end when the last character
// has no token); a span whose first character has no token stops the loop.
void mark_spans(std::vector<uint8_t>& mask, const std::vector<TokenRange>& offsets, std::string_view text,
                const std::vector<std::pair<size_t, size_t>>& spans);

}  // namespace moetune
