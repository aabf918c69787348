// Why: tokenizer.json's "model" turns one pre-tokenized word into ids. moetune has the two that its tokenizers use, as
// in HF tokenizers: BPE (bpe.h: byte-level and SentencePiece-style BPE of Qwen, OLMoE, GPT-2, Mixtral, Llama) and
// Unigram (unigram.h: what Transformers converts a unigram SentencePiece tokenizer.model into). Tokenizer
// (tokenizer.cpp) reaches them through this interface.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace moetune::tokenizer {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
// token -> id, looked up by string_view without a copy
using StringToId = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

class Model {
 public:
  virtual ~Model() = default;
  // Appends the ids of one pre-tokenized word (valid UTF-8).
  virtual void tokenize(std::string_view word, std::vector<int32_t>& ids) const = 0;
  virtual std::optional<int32_t> token_to_id(std::string_view token) const = 0;
  virtual const std::string* id_to_token(int32_t id) const = 0;  // nullptr when the id is not in the vocab
  // Entries in the vocab (HF's Model::get_vocab_size, which places the first added token that is not in the vocab).
  virtual size_t size() const = 0;
  virtual int32_t max_id() const = 0;
};

}  // namespace moetune::tokenizer
