// Why: a chat template writes {{ bos_token }} and {{ eos_token }}, and Transformers fills them from more than
// tokenizer_config.json: the tokenizer class's defaults (LlamaTokenizer's "<s>", Qwen2Tokenizer's "<|endoftext|>"),
// the model's own pieces for a converted tokenizer.model, special_tokens_map.json (which wins over
// tokenizer_config.json unless that has added_tokens_decoder), tokenizer.json's padding. A wrong value renders a
// different text than the model was tuned on, and a wrong eos changes what text samples end with.
// tests/fixtures/chat/special_tokens.json (tools/dataset/make_chat_fixtures.py, transformers 5.17) holds, for 35
// folders (tokenizer.model and tokenizer.json, with and without the fields, strings and AddedToken objects), the
// special_tokens_map Transformers' tokenizer has and what a template printing every variable renders; moetune must give
// the same, and refuse, naming the file and key, what it cannot know.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "../test_util.h"
#include "dataset/chat_template.h"
#include "dataset/sample_encoder.h"
#include "tokenizer/tokenizer.h"

namespace moetune {
namespace {

namespace fs = std::filesystem;
using nlohmann::ordered_json;
using test_util::error_of;
using test_util::TempFolder;
using test_util::write_text;
using Tokens = std::vector<std::pair<std::string, std::string>>;

std::string tokenizer_fixture(const std::string& base) {
  return test_util::source_dir() + "/tests/fixtures/tokenizer/" + base;
}

// `folder` with the fixture tokenizer `base` (its tokenizer.json with `padding`, or its tokenizer.model) and the given
// files (null: left out).
void fill_folder(const std::string& folder, const std::string& base, const ordered_json& padding,
                 const ordered_json& tokenizer_config, const ordered_json& config, const ordered_json& map) {
  if (fs::exists(tokenizer_fixture(base) + "/tokenizer.model")) {
    fs::copy_file(tokenizer_fixture(base) + "/tokenizer.model", folder + "/tokenizer.model");
  } else {
    ordered_json document = ordered_json::parse(test_util::read_text(tokenizer_fixture(base) + "/tokenizer.json"));
    document["padding"] = padding;
    write_text(folder + "/tokenizer.json", document.dump());
  }
  if (!tokenizer_config.is_null()) write_text(folder + "/tokenizer_config.json", tokenizer_config.dump());
  if (!config.is_null()) write_text(folder + "/config.json", config.dump());
  if (!map.is_null()) write_text(folder + "/special_tokens_map.json", map.dump());
}

TEST(ChatSpecialTokens, AsTransformersHoldsAndRendersThem) {
  const ordered_json fixture =
      ordered_json::parse(test_util::read_text(test_util::source_dir() + "/tests/fixtures/chat/special_tokens.json"));
  const std::string probe = fixture.at("template");
  const jinja::Value messages = jinja::Value::from_json(ordered_json::parse(R"([{"role": "user", "content": "x"}])"));
  ASSERT_GE(fixture.at("variants").size(), 30u);
  for (const auto& variant : fixture.at("variants")) {
    SCOPED_TRACE(variant.at("name").get<std::string>() + " (Transformers: " + variant.value("class", "error") + ")");
    TempFolder folder;
    ordered_json config = variant.at("tokenizer_config");
    if (config.is_object()) config["chat_template"] = probe;
    fill_folder(folder.path(), variant.at("base"), variant.at("padding"), config, variant.at("config"),
                variant.at("special_tokens_map"));
    if (variant.contains("error")) {  // Transformers cannot load the folder
      error_of([&] { Tokenizer::special_tokens_in_folder(folder.path()); });
      continue;
    }
    EXPECT_EQ(Tokenizer::special_tokens_in_folder(folder.path()), variant.at("special_tokens").get<Tokens>());
    if (!variant.contains("rendered")) continue;
    const ChatTemplate chat = ChatTemplate::from_folder(folder.path());
    EXPECT_EQ(chat.render(messages, jinja::Value(), false, jinja::Value()), variant.at("rendered").get<std::string>());
  }
}

// The eos TRL appends to text samples is the tokenizer's eos_token, defaults included: a tokenizer.model folder
// whose tokenizer_config.json names none ends its samples with LlamaTokenizer's "</s>".
TEST(ChatSpecialTokens, TextSamplesEndWithTheDefaultEos) {
  TempFolder folder;
  fill_folder(folder.path(), "spm_bpe", nullptr, {{"tokenizer_class", "LlamaTokenizer"}, {"add_bos_token", true}},
              nullptr, nullptr);
  const SampleEncoder encoder(folder.path(), DataFormat::Text);
  ASSERT_EQ(encoder.eos_id(), encoder.tokenizer().token_to_id("</s>"));
  EXPECT_EQ(encoder.encode_line(R"({"text": "Hello"})").ids.back(), encoder.eos_id());
  EXPECT_EQ(encoder.pad_id(), encoder.eos_id());  // no pad_token: TRL pads with eos
}

// A tokenizer.json class whose defaults moetune does not know: refused when the files leave out a token it could
// default, accepted when they name them all.
TEST(ChatSpecialTokens, UnknownClassNeedsTheTokensSpelledOut) {
  TempFolder folder;
  ordered_json config = {{"tokenizer_class", "CodeLlamaTokenizer"}, {"bos_token", "<s>"}, {"eos_token", "</s>"},
                         {"unk_token", "<unk>"}};
  fill_folder(folder.path(), "mixtral_spm", nullptr, config, nullptr, nullptr);
  EXPECT_MESSAGE_HAS(error_of([&] { Tokenizer::special_tokens_in_folder(folder.path()); }), "tokenizer_config.json",
                     "CodeLlamaTokenizer", "\"pad_token\"");
  config["pad_token"] = nullptr;
  write_text(folder.file("tokenizer_config.json"), config.dump());
  EXPECT_EQ(Tokenizer::special_tokens_in_folder(folder.path()),
            (Tokens{{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"unk_token", "<unk>"}}));

  TempFolder unknown_model;
  fill_folder(unknown_model.path(), "qwen2_bytelevel", nullptr, {{"tokenizer_class", "Qwen2Tokenizer"}},
              {{"model_type", "deepseek_v3"}}, nullptr);
  EXPECT_MESSAGE_HAS(error_of([&] { Tokenizer::special_tokens_in_folder(unknown_model.path()); }), "config.json",
                     "deepseek_v3", "\"bos_token\"");
}

// A model-specific key in special_tokens_map.json is a named token for a tokenizer.json folder (special_tokens.json:
// json_map_overrides_config), but refused beside a tokenizer.model, whose added-token order it would change.
TEST(ChatSpecialTokens, SentencePieceRefusesModelSpecificMapKeys) {
  TempFolder folder;
  fill_folder(folder.path(), "spm_bpe", nullptr, {{"tokenizer_class", "LlamaTokenizer"}}, nullptr,
              {{"image_token", "<0x41>"}});
  EXPECT_MESSAGE_HAS(error_of([&] { Tokenizer::special_tokens_in_folder(folder.path()); }),
                     "special_tokens_map.json", "image_token");
}

}  // namespace
}  // namespace moetune
