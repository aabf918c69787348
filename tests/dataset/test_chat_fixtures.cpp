// Why: chat data is only right if moetune renders each conversation exactly as Transformers' apply_chat_template does,
// tokenizes it to the same ids, and trains on the same tokens. tests/fixtures/chat/<family>/ (written by
// tools/dataset/make_chat_fixtures.py with transformers 5.17) holds, for the supported template families (Qwen2 ChatML,
// Qwen3 with <think>, Mixtral [INST], Llama-2 [INST]/<<SYS>>, OLMoE/Tulu <|user|>), conversations with and without a
// system prompt, multi-turn, Unicode, tool calls and generation prompts: the rendered text, its ids, and the
// assistant mask Transformers returns for the family's {% generation %}-annotated training template. Here moetune must
// give the same text and ids from the model's own template, and the same mask both from that template (incremental
// rendering, chat_template.h) and from the annotated one ({% generation %} blocks). Three more folders hold a
// tokenizer.model whose tokenizer_config.json leaves out the bos/eos tokens the template writes (LlamaTokenizer's
// defaults; the unigram model's own pieces, which include no BOS) or loses them to special_tokens_map.json: moetune
// must hand the template the special tokens Transformers' tokenizer holds (expected.json "special_tokens").
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "dataset/chat_template.h"
#include "dataset/sample_encoder.h"
#include "dataset/token_offsets.h"
#include "tokenizer/tokenizer.h"

namespace moetune {
namespace {

using nlohmann::ordered_json;

std::string chat_folder(const std::string& family) {
  return std::string(MOETUNE_SOURCE_DIR) + "/tests/fixtures/chat/" + family;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string mask_string(const std::vector<uint8_t>& mask) {
  std::string out;
  for (uint8_t m : mask) out += m ? '1' : '0';
  return out;
}

std::string mask_string(const ordered_json& mask) {
  std::string out;
  for (const auto& m : mask) out += m.get<int>() ? '1' : '0';
  return out;
}

class ChatFamily : public ::testing::TestWithParam<std::string> {};

TEST_P(ChatFamily, RendersTokenizesAndMasksLikeTransformers) {
  const std::string folder = chat_folder(GetParam());
  const ordered_json expected = ordered_json::parse(read_text(folder + "/expected.json"));
  const ChatTemplate chat = ChatTemplate::from_folder(folder);
  const Tokenizer tokenizer = Tokenizer::from_folder(folder);
  const TokenAligner aligner(tokenizer, Tokenizer::json_in_folder(folder), Tokenizer::file_in_folder(folder));
  ordered_json special = ordered_json::object();
  for (const auto& pair : expected["special_tokens"]) special[pair[0].get<std::string>()] = pair[1];
  EXPECT_EQ(chat.special_tokens(), special);
  const ChatTemplate training(read_text(folder + "/training_template.jinja"), "training_template.jinja",
                             chat.special_tokens(), {});
  ASSERT_TRUE(training.has_generation_blocks());
  ASSERT_FALSE(chat.has_generation_blocks());
  EXPECT_FALSE(chat.end_of_turn().empty());

  int masks_checked = 0;
  for (const auto& c : expected["cases"]) {
    SCOPED_TRACE(GetParam() + "/" + c["name"].get<std::string>());
    const jinja::Value messages = jinja::Value::from_json(c["messages"]);
    const jinja::Value tools = c.contains("tools") ? jinja::Value::from_json(c["tools"]) : jinja::Value();
    const ordered_json kwargs_json = c.contains("kwargs") ? c["kwargs"] : ordered_json::object();
    const jinja::Value kwargs = jinja::Value::from_json(kwargs_json);
    const bool generation = c["add_generation_prompt"].get<bool>();

    if (c.contains("error")) {
      try {
        chat.render(messages, tools, generation, kwargs);
        ADD_FAILURE() << "rendered a conversation Transformers refuses: " << c["error"];
      } catch (const ChatError& error) {
        const std::string hf = c["error"].get<std::string>();
        const std::string reason = hf.substr(hf.find(": ") + 2);
        EXPECT_NE(std::string(error.what()).find(reason), std::string::npos) << error.what() << "\nvs " << hf;
      }
      continue;
    }
    const std::string text = chat.render(messages, tools, generation, kwargs);
    EXPECT_EQ(text, c["text"].get<std::string>());
    const std::vector<int32_t> ids = tokenizer.encode(text, false);
    EXPECT_EQ(ids, c["input_ids"].get<std::vector<int32_t>>());
    if (!c.contains("assistant_masks")) continue;
    const std::string hf_mask = mask_string(c["assistant_masks"]);

    // The model's own template, masked by incremental rendering.
    ordered_json record = {{"messages", c["messages"]}};
    if (c.contains("tools")) record["tools"] = c["tools"];
    const SampleEncoder encoder(folder, DataFormat::Chat, kwargs_json);
    const EncodedSample sample = encoder.encode(record);
    EXPECT_EQ(sample.ids, ids);
    EXPECT_EQ(mask_string(sample.loss), hf_mask) << text;

    // The annotated template, masked by its {% generation %} blocks.
    const ChatTemplate::Rendered rendered = training.render_for_training(messages, tools, kwargs);
    EXPECT_EQ(rendered.text, text);
    std::vector<std::pair<size_t, size_t>> spans;
    for (const TextSpan& span : rendered.assistant) spans.emplace_back(span.begin, span.end);
    std::vector<uint8_t> mask;
    mark_spans(mask, aligner.offsets(text, ids), text, spans);
    EXPECT_EQ(mask_string(mask), hf_mask);
    ++masks_checked;
  }
  EXPECT_GE(masks_checked, 5);
}

INSTANTIATE_TEST_SUITE_P(DatasetChat, ChatFamily,
                         ::testing::Values("qwen2", "qwen3", "mixtral", "llama2", "olmoe", "mixtral_spm_defaults",
                                           "mixtral_unigram_pieces", "llama2_special_tokens_map"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

// The offsets recovered from ids agree with what HF reports on the fixtures' rendered chats at every span boundary
// (checked above through the masks); here the rules themselves: prepended "▁", multi-byte characters split across
// byte-level tokens.
TEST(DatasetChatOffsets, ByteLevelTokensCoverTheirBytes) {
  const std::string folder = chat_folder("qwen2");
  const Tokenizer tokenizer = Tokenizer::from_folder(folder);
  const TokenAligner aligner(tokenizer, read_text(folder + "/tokenizer.json"), "tokenizer.json");
  EXPECT_TRUE(aligner.byte_level());
  const std::string text = "<|im_start|>user\nGrüße 🙂<|im_end|>";
  const std::vector<int32_t> ids = tokenizer.encode(text, false);
  const std::vector<TokenRange> offsets = aligner.offsets(text, ids);
  ASSERT_EQ(offsets.size(), ids.size());
  EXPECT_EQ(offsets.front().begin, 0u);
  EXPECT_EQ(offsets.back().end, text.size());
  for (size_t k = 1; k < offsets.size(); ++k) EXPECT_LE(offsets[k - 1].begin, offsets[k].begin);
  EXPECT_EQ(first_token_at(offsets, text, text.find("<|im_end|>")), static_cast<int64_t>(ids.size() - 1));
}

TEST(DatasetChatOffsets, PrependedSpaceTakesTheNextCharacter) {
  const std::string folder = chat_folder("mixtral");
  const Tokenizer tokenizer = Tokenizer::from_folder(folder);
  const TokenAligner aligner(tokenizer, read_text(folder + "/tokenizer.json"), "tokenizer.json");
  EXPECT_FALSE(aligner.byte_level());
  const std::string text = " leading space";
  const std::vector<int32_t> ids = tokenizer.encode(text, false);
  const std::vector<TokenRange> offsets = aligner.offsets(text, ids);
  // HF: '▁' (0, 1), '▁lea' (0, 4), ...
  ASSERT_GE(offsets.size(), 2u);
  EXPECT_EQ(offsets[0].begin, 0u);
  EXPECT_EQ(offsets[0].end, 1u);
  EXPECT_EQ(offsets[1].begin, 0u);
  EXPECT_EQ(offsets.back().end, text.size());
}

TEST(DatasetChatTemplates, MissingTemplateIsAnError) {
  const std::string folder = std::string(MOETUNE_SOURCE_DIR) + "/tests/fixtures/tokenizer/qwen2_bytelevel";
  EXPECT_FALSE(ChatTemplate::folder_has_template(folder));
  try {
    ChatTemplate::from_folder(folder);
    ADD_FAILURE();
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("no chat template"), std::string::npos) << error.what();
  }
}

TEST(DatasetChatTemplates, TemplateWithoutAnEndOfTurnTokenNeedsGenerationBlocks) {
  const ChatTemplate plain("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}", "plain", {}, {"</s>"});
  EXPECT_TRUE(plain.end_of_turn().empty());
  const jinja::Value messages = jinja::Value::from_json(
      ordered_json::parse(R"([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])"));
  try {
    plain.render_for_training(messages, jinja::Value(), jinja::Value());
    ADD_FAILURE();
  } catch (const ChatError& error) {
    EXPECT_NE(std::string(error.what()).find("{% generation %}"), std::string::npos) << error.what();
  }
  const ChatTemplate annotated(
      "{% for m in messages %}{{ m.role }}: {% if m.role == 'assistant' %}{% generation %}{{ m.content }}"
      "{% endgeneration %}{% else %}{{ m.content }}{% endif %}{{ '\\n' }}{% endfor %}",
      "annotated", {}, {});
  const ChatTemplate::Rendered rendered = annotated.render_for_training(messages, jinja::Value(), jinja::Value());
  EXPECT_EQ(rendered.text, "user: a\nassistant: b\n");
  ASSERT_EQ(rendered.assistant.size(), 1u);
  EXPECT_EQ(rendered.text.substr(rendered.assistant[0].begin, rendered.assistant[0].end - rendered.assistant[0].begin),
            "b");
}

}  // namespace
}  // namespace moetune
