// Why: one JSONL record of fine-tuning data becomes the token ids the model trains on and which of them carry loss,
// the way Transformers/TRL's SFT prepares each shape of record:
//   {"text": "..."}                           ids of tokenizer(text) (add_special_tokens=True: BOS where the tokenizer's
//                                             post-processor adds one), then the eos token unless the ids end with it
//                                             (TRL appends eos); loss on every token.
//   {"prompt": "...", "completion": "..."}    the same for prompt + completion, tokenized as one text; loss from the
//                                             token that holds the completion's first character to the end (with eos).
//                                             When the prompt's own tokens are a prefix of the whole, that is TRL's
//                                             completion mask.
//   {"messages": [{"role", "content"}, ...],  the model's chat template (dataset/chat_template.h), tokenized without
//    "tools": [...] (optional)}               special tokens as apply_chat_template does; loss on the assistant spans.
// A record that is not valid JSON, not an object, lacks a field or has one of the wrong type, has an empty text, or
// that the chat template refuses, is bad data: encode() throws SampleError with what is wrong (the caller adds the file
// and line).
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "dataset/chat_template.h"
#include "dataset/token_offsets.h"
#include "tokenizer/tokenizer.h"

namespace moetune {

enum class DataFormat { Auto, Text, Prompt, Chat, Tokens };

DataFormat parse_data_format(const std::string& text);  // auto|text|prompt|chat|tokens; throws Error otherwise
const char* data_format_name(DataFormat format);

// The shape of one record: Chat ("messages"), Prompt ("prompt" and "completion"), Text ("text"), Tokens ("input_ids");
// nullopt when it has none of these.
std::optional<DataFormat> detect_format(const nlohmann::ordered_json& record);

class SampleError : public Error {
 public:
  using Error::Error;
};

struct EncodedSample {
  std::vector<int32_t> ids;
  std::vector<uint8_t> loss;  // (ids.size()) 1 where the label is the id, 0 where it is -100
};

class SampleEncoder {
 public:
  // Reads <folder>/tokenizer.json, and for chat data the chat template (chat_template.jinja / tokenizer_config.json).
  // `format` must be Text, Prompt or Chat. `template_kwargs`: extra variables for the chat template (a JSON object).
  SampleEncoder(const std::string& folder, DataFormat format,
                nlohmann::ordered_json template_kwargs = nlohmann::ordered_json::object());
  ~SampleEncoder();

  // One JSONL line (its text, without the newline). Thread-safe.
  EncodedSample encode_line(const std::string& line) const;
  EncodedSample encode(const nlohmann::ordered_json& record) const;

  DataFormat format() const { return format_; }
  const Tokenizer& tokenizer() const { return tokenizer_; }
  int32_t eos_id() const { return eos_id_; }
  int32_t pad_id() const { return pad_id_; }
  // What decides the ids: tokenizer.json's bytes, the chat template, its special tokens, the format and template
  // arguments, and this encoder's rules (a version). Part of the dataset cache key.
  nlohmann::ordered_json fingerprint() const;

 private:
  EncodedSample encode_text(const std::string& prompt, const std::string& completion, bool whole) const;
  EncodedSample encode_chat(const nlohmann::ordered_json& record) const;

  std::string folder_;
  DataFormat format_;
  nlohmann::ordered_json template_kwargs_;
  jinja::Value kwargs_value_;
  Tokenizer tokenizer_;
  std::unique_ptr<TokenAligner> aligner_;
  std::unique_ptr<ChatTemplate> chat_;
  std::vector<int32_t> special_prefix_, special_suffix_;  // what encode(text, add_special_tokens=true) adds
  int32_t eos_id_ = Tokenizer::kNoToken;
  int32_t pad_id_ = 0;
  uint64_t tokenizer_hash_ = 0;
};

// FNV-1a 64 of bytes (cache keys).
uint64_t fnv1a64(std::string_view bytes, uint64_t seed = 0xcbf29ce484222325ull);
std::string hex64(uint64_t value);

// What a dataset cache records of the tokenizer of `folder`: the FNV-1a 64 of Tokenizer::json_in_folder, i.e. of
// tokenizer.json, or of the document a tokenizer.model converts to (so a cache follows every file and rule that changes
// a SentencePiece folder's ids, and one built with moetune's earlier SentencePiece rules no longer matches).
uint64_t tokenizer_fingerprint(const std::string& folder);

}  // namespace moetune
