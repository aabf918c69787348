// Why: fine-tuning data arrives as text; moetune must turn it into exactly the ids Hugging Face `tokenizers` gives
// for the model's tokenizer.json (otherwise the fine-tuned model sees token sequences it was never trained on), with
// no Python at run time. This is that tokenizer, for the families moetune trains:
//   - byte-level BPE: Qwen2/Qwen3 (NFC + Split regex + ByteLevel), OLMoE/GPT-NeoX and GPT-2 (ByteLevel with its regex);
//   - SentencePiece-style BPE as in Mixtral's/Llama's tokenizer.json (Prepend/Replace normalizer or Metaspace
//     pre-tokenizer, byte_fallback with <0xXX> tokens), and the Unigram model (unigram.h).
//
// encode(text) follows HF's TokenizerImpl::encode step by step:
//   0. invalid UTF-8 in `text` becomes U+FFFD, one per maximal invalid subpart -- the ids are those HF gives for
//      `bytes.decode("utf-8", errors="replace")` (HF itself only ever sees valid strings);
//   1. added tokens with normalized=false are cut out of the raw text (AddedVocabulary);
//   2. each piece in between is normalized, then added tokens with normalized=true are cut out of it;
//   3. each remaining piece is pre-tokenized into words, and each word encoded by the model (BPE or Unigram);
//   4. the post-processor adds BOS/EOS-style tokens only when add_special_tokens is true.
// decode(ids) maps ids to token strings (added tokens first), drops special tokens when asked, runs the decoder chain.
//
// Anything in tokenizer.json that moetune does not implement, or that would make it differ from HF (a normalizer or
// pre-tokenizer type it lacks, BPE dropout, truncation, fixed padding, an added token id HF would assign differently),
// is a moetune::Error naming the file and the JSON path of the field. The parts and their exact rules are described
// in normalizer.h, pre_tokenizer.h, bpe.h, unigram.h, added_vocabulary.h, post_processor.h and decoder.h.
//
// Unicode data follows HF's, not the system's: regex classes (\p{L}, \s, ...) use code point tables measured from
// HF (unicode_classes.inc, Unicode 16.0), NFC is ICU's restricted to Unicode 9.0 (what HF's normalizer knows).
//
// A folder with a SentencePiece tokenizer.model and no tokenizer.json is first converted into the tokenizer.json that
// Transformers 5 builds from it when it loads the folder (sentencepiece_conversion.h: tokenizer_config.json and
// config.json decide how), then encoded like any other.
//
// A Tokenizer is immutable after loading; encode/decode may run concurrently from several threads (the BPE word cache
// is shared, in 64 shards each under its own reader/writer lock).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace moetune {

class Tokenizer {
 public:
  static constexpr int32_t kNoToken = -1;

  // Reads `folder`/tokenizer.json (a Hugging Face model folder). tokenizer_config.json is not needed: everything that
  // changes ids lives in tokenizer.json. Without tokenizer.json, `folder`/tokenizer.model converted as Transformers
  // converts it (json_in_folder).
  static Tokenizer from_folder(const std::string& folder);
  // The file from_folder reads: `folder`/tokenizer.json, else `folder`/tokenizer.model; an Error when neither exists.
  static std::string file_in_folder(const std::string& folder);
  // The tokenizer.json text from_folder loads: the file, or the document converted from tokenizer.model (with
  // tokenizer_config.json, config.json and special_tokens_map.json). Its bytes identify the tokenizer (cache keys).
  static std::string json_in_folder(const std::string& folder);
  // The special tokens Transformers' tokenizer for `folder` holds by name (its special_tokens_map: bos_token,
  // eos_token, ..., model-specific "*_token" names), key -> content, in its order: what apply_chat_template gives the
  // chat template, and the tokenizer's eos_token / pad_token. From tokenizer_config.json, special_tokens_map.json and
  // the defaults of the class Transformers loads the folder with (special_tokens.h).
  static std::vector<std::pair<std::string, std::string>> special_tokens_in_folder(const std::string& folder);
  static Tokenizer from_file(const std::string& tokenizer_json_path);
  // `source` names the text in error messages.
  static Tokenizer from_json_string(std::string_view json_text, const std::string& source = "tokenizer.json");

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // The ids HF gives for tokenizer.encode(text, add_special_tokens=...).ids; `text` is UTF-8 bytes (see step 0).
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = false) const;
  // HF's tokenizer.decode(ids, skip_special_tokens=...): ids that are not tokens are skipped, as HF does.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;

  // Added tokens first, then the model vocab (as HF); kNoToken when `token` is neither.
  int32_t token_to_id(std::string_view token) const;
  std::optional<std::string> id_to_token(int32_t id) const;
  bool is_special(int32_t id) const;                 // an added token marked special
  std::vector<int32_t> special_token_ids() const;    // ascending
  // One more than the largest id (model vocab and added tokens): the embedding rows a model needs. HF's
  // get_vocab_size(with_added_tokens=True) counts distinct tokens instead; the two agree when ids have no holes.
  int vocab_size() const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace moetune
