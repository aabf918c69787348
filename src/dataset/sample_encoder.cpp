// Why: see sample_encoder.h.
#include "dataset/sample_encoder.h"

#include <algorithm>

#include "dataset/jinja_internal.h"

namespace moetune {

using nlohmann::ordered_json;

namespace {

// Bump when the rules that turn records into ids or masks change: every cache built before is then rebuilt.
constexpr const char* kEncoderVersion = "moetune-sample-encoder/2";

std::string type_name(const ordered_json& value) { return value.type_name(); }

const std::string& string_field(const ordered_json& record, const char* field) {
  if (!record.contains(field)) throw SampleError(str("missing \"", field, "\""));
  const ordered_json& value = record[field];
  if (!value.is_string()) throw SampleError(str("\"", field, "\" is not a string (found ", type_name(value), ")"));
  return value.get_ref<const std::string&>();
}

bool blank(const std::string& text) {
  return std::all_of(text.begin(), text.end(), [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; });
}

}  // namespace

uint64_t fnv1a64(std::string_view bytes, uint64_t seed) {
  uint64_t hash = seed;
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 0x100000001b3ull;
  }
  return hash;
}

uint64_t tokenizer_fingerprint(const std::string& folder) { return fnv1a64(Tokenizer::json_in_folder(folder)); }

std::string hex64(uint64_t value) {
  static const char* digits = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i, value >>= 4) out[static_cast<size_t>(i)] = digits[value & 15];
  return out;
}

DataFormat parse_data_format(const std::string& text) {
  if (text == "auto") return DataFormat::Auto;
  if (text == "text") return DataFormat::Text;
  if (text == "prompt") return DataFormat::Prompt;
  if (text == "chat") return DataFormat::Chat;
  if (text == "tokens") return DataFormat::Tokens;
  fail("data format must be auto, text, prompt, chat or tokens, got \"", text, "\"");
}

const char* data_format_name(DataFormat format) {
  switch (format) {
    case DataFormat::Auto: return "auto";
    case DataFormat::Text: return "text";
    case DataFormat::Prompt: return "prompt";
    case DataFormat::Chat: return "chat";
    case DataFormat::Tokens: return "tokens";
  }
  return "?";
}

std::optional<DataFormat> detect_format(const ordered_json& record) {
  if (!record.is_object()) return std::nullopt;
  if (record.contains("messages")) return DataFormat::Chat;
  if (record.contains("prompt") && record.contains("completion")) return DataFormat::Prompt;
  if (record.contains("text")) return DataFormat::Text;
  if (record.contains("input_ids")) return DataFormat::Tokens;
  return std::nullopt;
}

SampleEncoder::SampleEncoder(const std::string& folder, DataFormat format, ordered_json template_kwargs)
    : folder_(folder),
      format_(format),
      template_kwargs_(std::move(template_kwargs)),
      tokenizer_(Tokenizer::from_folder(folder)) {
  if (format != DataFormat::Text && format != DataFormat::Prompt && format != DataFormat::Chat)
    fail("sample encoder: format ", data_format_name(format), " is not text, prompt or chat");
  if (!template_kwargs_.is_object()) fail("chat template arguments must be a JSON object, got ", template_kwargs_.dump());
  const std::string tokenizer_path = Tokenizer::file_in_folder(folder);
  const std::string tokenizer_json = Tokenizer::json_in_folder(folder);
  tokenizer_hash_ = fnv1a64(tokenizer_json);
  aligner_ = std::make_unique<TokenAligner>(tokenizer_, tokenizer_json, tokenizer_path);
  kwargs_value_ = jinja::Value::from_json(template_kwargs_);

  // Transformers' tokenizer.eos_token / pad_token (TRL appends the one, pads with the other, eos when there is none).
  std::string eos, pad;
  for (const auto& [key, content] : Tokenizer::special_tokens_in_folder(folder)) {
    if (key == "eos_token") eos = content;
    if (key == "pad_token") pad = content;
  }
  if (!eos.empty()) {
    eos_id_ = tokenizer_.token_to_id(eos);
    if (eos_id_ == Tokenizer::kNoToken) fail(folder, ": eos_token \"", eos, "\" is not a token of ", tokenizer_path);
  }
  const int32_t pad_id = pad.empty() ? Tokenizer::kNoToken : tokenizer_.token_to_id(pad);
  pad_id_ = pad_id != Tokenizer::kNoToken ? pad_id : (eos_id_ != Tokenizer::kNoToken ? eos_id_ : 0);

  // What the post-processor adds around a single sequence (BOS, EOS, ...), from a probe.
  const std::vector<int32_t> with = tokenizer_.encode("a", true), without = tokenizer_.encode("a", false);
  if (!without.empty())
    for (size_t k = 0; k + without.size() <= with.size(); ++k)
      if (std::equal(without.begin(), without.end(), with.begin() + static_cast<long>(k))) {
        special_prefix_.assign(with.begin(), with.begin() + static_cast<long>(k));
        special_suffix_.assign(with.begin() + static_cast<long>(k + without.size()), with.end());
        break;
      }

  if (format == DataFormat::Chat) {
    chat_ = std::make_unique<ChatTemplate>(ChatTemplate::from_folder(folder));
    try {
      chat_->check_trainable();
    } catch (const ChatError& error) {
      fail(error.what());
    }
  }
}

SampleEncoder::~SampleEncoder() = default;

ordered_json SampleEncoder::fingerprint() const {
  ordered_json print = {{"encoder", kEncoderVersion},
                        {"format", data_format_name(format_)},
                        {"tokenizer_json_fnv1a64", hex64(tokenizer_hash_)},
                        {"template_kwargs", template_kwargs_}};
  if (chat_) {
    print["chat_template_fnv1a64"] = hex64(fnv1a64(chat_->source()));
    print["special_tokens"] = chat_->special_tokens();
  }
  print["eos_id"] = eos_id_;
  return print;
}

EncodedSample SampleEncoder::encode_line(const std::string& line) const {
  ordered_json record;
  try {
    record = ordered_json::parse(line);
  } catch (const nlohmann::json::parse_error& error) {
    std::string message = error.what();
    const size_t at = message.find("column");
    throw SampleError(str("malformed JSON at ", at == std::string::npos ? message : message.substr(at)));
  }
  return encode(record);
}

EncodedSample SampleEncoder::encode(const ordered_json& record) const {
  if (!record.is_object()) throw SampleError(str("line is not a JSON object (found ", type_name(record), ")"));
  EncodedSample sample;
  switch (format_) {
    case DataFormat::Text: {
      const std::string& text = string_field(record, "text");
      if (blank(text)) throw SampleError("\"text\" is empty");
      sample = encode_text("", text, true);
      break;
    }
    case DataFormat::Prompt: {
      const std::string& prompt = string_field(record, "prompt");
      const std::string& completion = string_field(record, "completion");
      if (blank(completion)) throw SampleError("\"completion\" is empty");
      sample = encode_text(prompt, completion, false);
      break;
    }
    case DataFormat::Chat: sample = encode_chat(record); break;
    default: throw SampleError("unsupported format");
  }
  bool trained = false;
  for (size_t t = 1; t < sample.loss.size() && !trained; ++t) trained = sample.loss[t] != 0;
  if (!trained) throw SampleError("no token to train on (every label would be -100)");
  return sample;
}

EncodedSample SampleEncoder::encode_text(const std::string& prompt, const std::string& completion, bool whole) const {
  const std::string text = prompt + completion;
  const std::vector<int32_t> core = tokenizer_.encode(text, false);
  if (core.empty()) throw SampleError("the text has no tokens");
  EncodedSample sample;
  sample.ids = special_prefix_;
  sample.ids.insert(sample.ids.end(), core.begin(), core.end());
  sample.ids.insert(sample.ids.end(), special_suffix_.begin(), special_suffix_.end());
  if (eos_id_ != Tokenizer::kNoToken && sample.ids.back() != eos_id_) sample.ids.push_back(eos_id_);
  sample.loss.assign(sample.ids.size(), 1);
  if (whole) return sample;
  const std::vector<TokenRange> offsets = aligner_->offsets(text, core);
  const int64_t first = first_token_at(offsets, text, prompt.size());
  if (first < 0) throw SampleError("the completion has no tokens");
  std::fill(sample.loss.begin(), sample.loss.begin() + static_cast<long>(special_prefix_.size()) + first, 0);
  return sample;
}

EncodedSample SampleEncoder::encode_chat(const ordered_json& record) const {
  if (!record.contains("messages")) throw SampleError("missing \"messages\"");
  const ordered_json& messages = record["messages"];
  if (!messages.is_array()) throw SampleError(str("\"messages\" is not an array (found ", type_name(messages), ")"));
  if (messages.empty()) throw SampleError("\"messages\" is empty");
  bool has_assistant = false;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ordered_json& message = messages[i];
    if (!message.is_object()) throw SampleError(str("messages[", i, "] is not an object (found ", type_name(message), ")"));
    if (!message.contains("role")) throw SampleError(str("messages[", i, "]: missing \"role\""));
    if (!message["role"].is_string())
      throw SampleError(str("messages[", i, "]: \"role\" is not a string (found ", type_name(message["role"]), ")"));
    if (!message.contains("content")) throw SampleError(str("messages[", i, "]: missing \"content\""));
    const ordered_json& content = message["content"];
    if (!content.is_string() && !content.is_null() && !content.is_array())
      throw SampleError(str("messages[", i, "]: \"content\" is not a string (found ", type_name(content), ")"));
    if (message["role"] == "assistant") has_assistant = true;
  }
  if (!has_assistant) throw SampleError("no assistant message (nothing to train on)");
  jinja::Value tools;
  if (record.contains("tools") && !record["tools"].is_null()) {
    if (!record["tools"].is_array()) throw SampleError(str("\"tools\" is not an array (found ", type_name(record["tools"]), ")"));
    tools = jinja::Value::from_json(record["tools"]);
  }
  ChatTemplate::Rendered rendered;
  try {
    rendered = chat_->render_for_training(jinja::Value::from_json(messages), tools, kwargs_value_);
  } catch (const ChatError& error) {
    throw SampleError(str("chat template: ", error.what()));
  }
  EncodedSample sample;
  sample.ids = tokenizer_.encode(rendered.text, false);
  const std::vector<TokenRange> offsets = aligner_->offsets(rendered.text, sample.ids);
  std::vector<std::pair<size_t, size_t>> spans;
  for (const TextSpan& span : rendered.assistant) spans.emplace_back(span.begin, span.end);
  mark_spans(sample.loss, offsets, rendered.text, spans);
  return sample;
}

}  // namespace moetune
