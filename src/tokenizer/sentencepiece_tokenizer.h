// Why: some model folders carry only a SentencePiece `tokenizer.model` (the file Llama and Mistral models were trained
// with) and no tokenizer.json. Re-implementing SentencePiece's normalizer and its BPE/unigram segmentation would be a
// second oracle to keep in step; Debian's libsentencepiece *is* the reference, so this backend calls it and adds only
// what Transformers puts around it (tokenizer_config.json). Used by moetune::Tokenizer (tokenizer.h) when a folder has
// tokenizer.model and no tokenizer.json (tokenizer.json wins, as with Transformers' fast tokenizers).
//
// encode(text, add_special_tokens) is Transformers' SentencePiece slow tokenizer with legacy=true (v4's LlamaTokenizer
// and SentencePieceBackend in v5; equal to sentencepiece's own EncodeAsIds on text without special tokens):
//   0. invalid UTF-8 becomes U+FFFD, one per maximal invalid subpart (as tokenizer.h, step 0);
//   1. the special-token strings are cut out of the text (earliest match first, the longest at one position, as
//      Transformers' added-tokens trie): bos/eos/unk/pad_token of tokenizer_config.json, where a key is absent the
//      model's own piece for that role, and every added_tokens_decoder entry; each becomes its id;
//   2. every non-empty piece between them goes through sentencepiece's Encode on its own (so each gets the model's
//      normalization and, with add_dummy_prefix, its own leading "▁" -- the legacy=true behaviour);
//   3. add_special_tokens: BOS first when add_bos_token (default true, LlamaTokenizer's) and the model has a BOS, EOS
//      last when add_eos_token (default false).
// decode(ids): ids outside the vocabulary are skipped; runs of ordinary ids go through sentencepiece's Decode, and
// special ids (those of step 1) are written as their piece, or dropped with skip_special_tokens. decode(encode(text))
// is the text whenever sentencepiece's own decode(encode(piece)) is each piece (identity normalization, byte fallback).
//
// Refused with an error naming tokenizer_config.json and the key: legacy=false (Transformers' non-legacy handling of the
// text after a special token), add_prefix_space=false, sp_model_kwargs (sampling), an added token that is not a piece of
// the model with that id, or one with lstrip/rstrip/single_word. Encode and decode may run concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace moetune::tokenizer {

class SentencePieceTokenizer {
 public:
  // `config_path`: tokenizer_config.json, or "" when the folder has none (then every default above applies).
  SentencePieceTokenizer(const std::string& model_path, const std::string& config_path);
  ~SentencePieceTokenizer();

  // `text` must be valid UTF-8 (Tokenizer::encode repairs it first).
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  std::optional<std::string> id_to_token(int32_t id) const;
  bool is_special(int32_t id) const;
  std::vector<int32_t> special_token_ids() const;  // ascending
  int vocab_size() const;

 private:
  void add_special(const std::string& content, const std::string& where);
  void encode_piece(std::string_view piece, std::vector<int32_t>& ids) const;

  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::string model_path_;
  std::vector<std::pair<std::string, int32_t>> specials_;  // step 1's strings and their ids, longest first
  std::vector<bool> special_id_;                             // (vocab_size) true for the ids of specials_
  int32_t bos_id_ = -1;  // added by add_special_tokens; -1: none
  int32_t eos_id_ = -1;
};

}  // namespace moetune::tokenizer
