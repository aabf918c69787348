// Why: how Transformers converts a tokenizer.model depends on the files around it (tokenizer_config.json's class,
// legacy, add_prefix_space, special tokens and added_tokens_decoder; special_tokens_map.json; config.json's
// model_type), and each rule of src/tokenizer/sentencepiece_conversion.h must be pinned on Transformers itself, not on
// moetune's reading of its code.
// tests/fixtures/tokenizer/spm_variants.json (tools/tokenizer/make_spm_fixtures.py) holds, for the two fixture models
// with other such files, the class Transformers 5.17 picked, the tokenizer it converted (without vocab and merges) and
// its ids and decodes for the hand-written texts about whitespace, prefixes and special tokens. Also: every
// configuration moetune does not convert is refused with an error naming the file and the field.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "core/error.h"
#include "tokenizer/sentencepiece_conversion.h"
#include "tokenizer/tokenizer.h"
#include "../test_util.h"
#include "tokenizer_fixture.h"

namespace moetune {
namespace {

using tokenizer_test::describe;
using tokenizer_test::fixture_text;
using tokenizer_test::fixtures_dir;
using tokenizer_test::ids_string;
using tokenizer_test::kMaxReported;
using test_util::TempFolder;
using test_util::write_text;
namespace fs = std::filesystem;

// A folder with the fixture `base`'s tokenizer.model and the given files ("" leaves a file out).
void fill_folder(const TempFolder& folder, const std::string& base, const std::string& tokenizer_config,
                 const std::string& config) {
  fs::copy_file(fixtures_dir() + "/" + base + "/tokenizer.model", folder.file("tokenizer.model"));
  if (!tokenizer_config.empty()) write_text(folder.file("tokenizer_config.json"), tokenizer_config);
  if (!config.empty()) write_text(folder.file("config.json"), config);
}

TEST(SentencePieceVariants, ConvertAndEncodeAsTransformers) {
  const nlohmann::json fixture = tokenizer_test::read_json(fixtures_dir() + "/spm_variants.json");
  const nlohmann::json& texts = fixture.at("texts");
  ASSERT_GE(fixture.at("variants").size(), 12u);
  for (const auto& variant : fixture.at("variants")) {
    const std::string name = variant.at("name");
    SCOPED_TRACE(name + " (Transformers: " + variant.at("class").get<std::string>() + ")");
    TempFolder folder;
    const auto& config = variant.at("tokenizer_config");
    const auto& model_config = variant.at("config");
    fill_folder(folder, variant.at("base"), config.is_null() ? "" : config.dump(),
                model_config.is_null() ? "" : model_config.dump());
    if (!variant.at("special_tokens_map").is_null()) {
      write_text(folder.file("special_tokens_map.json"), variant.at("special_tokens_map").dump());
    }

    nlohmann::json converted = tokenizer::convert_sentencepiece_folder(folder.path());
    converted["model"].erase("vocab");
    converted["model"].erase("merges");
    EXPECT_EQ(converted, variant.at("converted"))
        << "difference (JSON patch from moetune to Transformers): "
        << nlohmann::json::diff(converted, variant.at("converted")).dump();

    const Tokenizer tok = Tokenizer::from_folder(folder.path());
    EXPECT_EQ(tok.special_token_ids(), variant.at("special_ids").get<std::vector<int32_t>>());
    int failures = 0;
    for (size_t i = 0; i < texts.size(); ++i) {
      const std::string text = fixture_text(texts[i]);
      const nlohmann::json& want = variant.at("cases").at(i);
      const auto ids = want.at("ids").get<std::vector<int32_t>>();
      const auto with_special = want.at("ids_with_special").get<std::vector<int32_t>>();
      const std::string decoded = tok.decode(ids), skipped = tok.decode(ids, /*skip_special_tokens=*/true);
      const auto got = tok.encode(text), got_special = tok.encode(text, /*add_special_tokens=*/true);
      if ((got != ids || got_special != with_special || decoded != want.at("decoded") ||
           skipped != want.at("decoded_skip_special")) &&
          ++failures <= kMaxReported) {
        ADD_FAILURE() << name << " text " << describe(text) << "\n  ids      HF " << ids_string(ids)
                      << "\n           us " << ids_string(got) << "\n  special  HF " << ids_string(with_special)
                      << "\n           us " << ids_string(got_special) << "\n  decode   HF "
                      << describe(want.at("decoded")) << "\n           us " << describe(decoded) << "\n  skip     HF "
                      << describe(want.at("decoded_skip_special")) << "\n           us " << describe(skipped);
      }
    }
    EXPECT_EQ(failures, 0) << "of " << texts.size() << " texts";
  }
}

// LlamaTokenizer ignores the model's own normalizer (here a charsmap appended to spm_bpe's tokenizer.model as a second
// normalizer_spec, which protobuf merges into the first), so the ids stay those of spm_bpe.
TEST(SentencePieceVariants, LlamaTokenizerIgnoresTheModelsNormalizer) {
  TempFolder folder;
  fs::copy_file(fixtures_dir() + "/spm_bpe/tokenizer_config.json", folder.file("tokenizer_config.json"));
  write_text(folder.file("tokenizer.model"), tokenizer_test::read_text(fixtures_dir() + "/spm_bpe/tokenizer.model") +
                                                 std::string("\x1a\x05\x12\x03" "abc", 7));
  const Tokenizer with_charsmap = Tokenizer::from_folder(folder.path());
  const Tokenizer plain = Tokenizer::from_folder(fixtures_dir() + "/spm_bpe");
  const std::string text = " ｆｕｌｌ　ｗｉｄｔｈ ① and <s> text";
  EXPECT_EQ(with_charsmap.encode(text, true), plain.encode(text, true));
}

TEST(SentencePieceVariants, RefusesWhatItDoesNotConvert) {
  struct Case {
    std::string base, tokenizer_config, config, extra_file, extra_text, appended_to_model;
    std::vector<std::string> words;  // the error message names these
  };
  // tokenizer_config.json of a LlamaTokenizer with more keys
  auto llama = [](const std::string& more) { return R"({"tokenizer_class": "LlamaTokenizer")" + more + "}"; };
  const std::string charsmap("\x1a\x05\x12\x03" "abc", 7);  // a normalizer_spec with a precompiled_charsmap
  const std::string word_model("\x12\x02\x18\x03", 4);        // a trainer_spec with model_type WORD
  const std::vector<Case> cases = {
      {"spm_bpe", R"({"tokenizer_class": "T5Tokenizer"})", "", "", "", "", {"tokenizer_config.json", "T5Tokenizer"}},
      {"spm_bpe", llama(R"(, "auto_map": {"AutoTokenizer": ["x.Tok", null]})"), "", "", "", "",
       {"tokenizer_config.json", "auto_map"}},
      {"spm_bpe", "{}", R"({"model_type": "gemma"})", "", "", "", {"config.json", "model_type", "gemma"}},
      {"spm_bpe", "{}", R"({"model_type": "qwen3_moe"})", "", "", "", {"config.json", "Qwen2Tokenizer"}},
      {"spm_bpe", llama(R"(, "split_special_tokens": true)"), "", "", "", "",
       {"tokenizer_config.json", "split_special_tokens"}},
      {"spm_bpe", llama(R"(, "legacy": "yes")"), "", "", "", "", {"tokenizer_config.json", "legacy"}},
      {"spm_bpe", llama(R"(, "add_bos_token": 1)"), "", "", "", "", {"tokenizer_config.json", "add_bos_token"}},
      {"spm_bpe", llama(R"(, "bos_token": {"content": "<s>"})"), "", "", "", "",
       {"tokenizer_config.json", "bos_token", "__type"}},
      {"spm_bpe", llama(R"(, "added_tokens_decoder": {"1": {"content": "</s>"}})"), "", "", "", "",
       {"tokenizer_config.json", "added_tokens_decoder", "id 2"}},
      {"spm_bpe", llama(R"(, "added_tokens_decoder": {"x": {"content": "</s>"}})"), "", "", "", "",
       {"tokenizer_config.json", "added_tokens_decoder", "token id"}},
      {"spm_bpe", llama(R"(, "bos_token": "<a b>", "add_bos_token": true)"), "", "", "", "",
       {"tokenizer_config.json", "bos_token", "space"}},
      {"spm_bpe", llama(R"(, "fix_mistral_regex": true)"), "", "", "", "", {"tokenizer_config.json", "fix_mistral_regex"}},
      {"spm_bpe", llama(""), "", "special_tokens_map.json", R"({"image_token": "<s>"})", "",
       {"special_tokens_map.json", "image_token"}},
      {"spm_bpe", llama(""), "", "added_tokens.json", R"({"<x>": 1000})", "", {"added_tokens.json"}},
      {"spm_bpe", "[1, 2]", "", "", "", "", {"tokenizer_config.json", "not a JSON object"}},
      {"spm_bpe", "{}", "", "", "", charsmap, {"tokenizer.model", "precompiled_charsmap"}},
      {"spm_bpe", "{}", "", "", "", word_model, {"tokenizer.model", "model_type", "WORD"}},
      {"spm_unigram", R"({"added_tokens_decoder": {"1": {"content": "</s>", "special": true}}})", "", "", "", "",
       {"tokenizer_config.json", "added_tokens_decoder", "unigram"}},
      {"spm_unigram", R"({"clean_up_tokenization_spaces": true})", "", "", "", "",
       {"tokenizer_config.json", "clean_up_tokenization_spaces"}},
  };
  for (const Case& c : cases) {
    TempFolder folder;
    fill_folder(folder, c.base, c.tokenizer_config, c.config);
    if (!c.extra_file.empty()) write_text(folder.file(c.extra_file), c.extra_text);
    if (!c.appended_to_model.empty()) {
      write_text(folder.file("tokenizer.model"),
                 tokenizer_test::read_text(fixtures_dir() + "/" + c.base + "/tokenizer.model") + c.appended_to_model);
    }
    const std::string label =
        c.tokenizer_config + " " + c.config + " " + c.extra_file + " " + describe(c.appended_to_model);
    try {
      Tokenizer::from_folder(folder.path());
      ADD_FAILURE() << label << " was accepted";
    } catch (const Error& e) {
      for (const std::string& word : c.words) {
        EXPECT_NE(std::string(e.what()).find(word), std::string::npos) << label << ": " << e.what();
      }
    }
  }
}

}  // namespace
}  // namespace moetune
