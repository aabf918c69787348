// Why: a chat sample is trained on the text the model's own chat template makes of it, exactly as Transformers'
// apply_chat_template(messages, tools=..., add_generation_prompt=False, **kwargs) renders it, and only on what the
// assistant says. This file finds the template, renders it (dataset/jinja.h) with the variables Transformers passes,
// and says which byte ranges of the rendered text carry loss.
//
// Where the template comes from (Transformers' order): <folder>/chat_template.jinja, else tokenizer_config.json's
// "chat_template" (a string, or a list of {"name", "template"} of which "default" is taken). The template sees
// `messages`, `tools` (None unless the sample has some), `documents` (None), `add_generation_prompt`, the special
// tokens Transformers' tokenizer holds by name (its special_tokens_map: bos_token, eos_token, unk_token, sep_token,
// pad_token, cls_token, mask_token and model-specific "*_token" names that are set, as strings; a token the folder's
// files leave out can still be set by the tokenizer class's default, and special_tokens_map.json can override
// tokenizer_config.json: Tokenizer::special_tokens_in_folder, tokenizer/special_tokens.h), and the extra keyword
// arguments given (e.g. enable_thinking), which win over a special token of the same name.
//
// What carries loss (the "assistant mask"), defined per assistant message i of the conversation, over the rendered text
// S of the whole conversation:
//   - a template with {% generation %} blocks: exactly the blocks' output, as Transformers' return_assistant_tokens_mask
//     and TRL's assistant_only_loss take it;
//   - a template without them (the models' own templates): the span begins where the prompt of that turn ends,
//     |render(messages[:i], add_generation_prompt=True)| (which must be a prefix of S, else the sample is refused:
//     "not prefix-preserving"), and ends after the first end-of-turn token that follows. The end-of-turn token is the
//     added token the template writes after an assistant message's content, past any whitespace (found once by
//     rendering a probe conversation): <|im_end|> for ChatML (Qwen2, Qwen3), </s> for Mixtral and Llama-2 (" </s>"),
//     the eos token for OLMoE/Tulu. This is "rendering incrementally and diffing prefixes" for the start of a turn,
//     measured against the whole conversation's text, so Qwen3 (which drops <think> from turns before the last user
//     query, and is therefore not prefix-preserving turn by turn) is masked on the text it is trained on.
//     So the span is what the model generates for that turn: its content as the template renders it (with Qwen3's
//     <think> block when the template writes one) and the end-of-turn token, never the role header nor the newline
//     after the end-of-turn token. The training variants of the supported templates in tests/fixtures/chat/ put
//     {% generation %} around exactly these spans, and the tests check both agree with Transformers' masks.
// Byte spans become token masks as Transformers does it (sample_encoder.h): a token is in when it overlaps a span's
// first character, its last, or anything between.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dataset/jinja.h"

namespace moetune {

struct TextSpan {
  size_t begin, end;  // bytes [begin, end) of the rendered text
};

// A conversation the template refuses (raise_exception, a missing field it reads, not prefix-preserving): bad data,
// counted and reported with the sample's file and line by the caller.
class ChatError : public Error {
 public:
  using Error::Error;
};

class ChatTemplate {
 public:
  // True when `folder` has chat_template.jinja or a "chat_template" in tokenizer_config.json.
  static bool folder_has_template(const std::string& folder);
  // Reads the template from `folder`, the special tokens and added tokens (to find the end-of-turn token) of its
  // tokenizer (tokenizer.json, or the tokenizer a tokenizer.model converts to). Errors name the file.
  static ChatTemplate from_folder(const std::string& folder);
  // `special_tokens`: {"bos_token": "<s>", ...}; `added_tokens`: the tokenizer's added token strings. `name` prefixes
  // template errors.
  ChatTemplate(std::string source, std::string name, nlohmann::ordered_json special_tokens,
               std::vector<std::string> added_tokens);

  ChatTemplate(ChatTemplate&&) noexcept = default;
  ChatTemplate& operator=(ChatTemplate&&) noexcept = default;

  // apply_chat_template(messages, tools=tools, add_generation_prompt=..., **kwargs) as text. `tools` may be Undefined
  // (None is passed), `kwargs` a Dict value or Undefined. Throws ChatError when the template refuses the conversation.
  std::string render(const jinja::Value& messages, const jinja::Value& tools, bool add_generation_prompt,
                     const jinja::Value& kwargs, std::vector<jinja::GenerationSpan>* spans = nullptr) const;

  struct Rendered {
    std::string text;
    std::vector<TextSpan> assistant;  // ascending, disjoint
  };
  // The conversation as trained on (add_generation_prompt=False) and its assistant spans (see the file comment).
  Rendered render_for_training(const jinja::Value& messages, const jinja::Value& tools, const jinja::Value& kwargs) const;

  // Throws ChatError when assistant spans cannot be found (no {% generation %} blocks and no end-of-turn token).
  void check_trainable() const;

  const std::string& source() const { return source_; }
  const std::string& name() const { return template_.name(); }
  const nlohmann::ordered_json& special_tokens() const { return special_tokens_; }
  bool has_generation_blocks() const { return template_.has_generation_blocks(); }
  // The end-of-turn token found by the probe ("" with {% generation %} blocks, or when none could be found).
  const std::string& end_of_turn() const { return end_of_turn_; }

 private:
  jinja::Value variables(const jinja::Value& messages, const jinja::Value& tools, bool add_generation_prompt,
                         const jinja::Value& kwargs) const;
  std::string find_end_of_turn(const std::vector<std::string>& added_tokens);

  std::string source_;
  jinja::Template template_;
  nlohmann::ordered_json special_tokens_;
  std::string end_of_turn_;
  std::string end_of_turn_problem_;  // why none was found
};

}  // namespace moetune
