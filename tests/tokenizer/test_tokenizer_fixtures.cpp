// Why: the contract of src/tokenizer/ is "exactly the ids Hugging Face tokenizers gives". Each of the five fixture
// tokenizers (trained by tools/tokenizer/make_fixtures.py in the shapes of Qwen2, OLMoE, GPT-2, Mixtral and the newer
// Llama form) comes with HF's answers for ~100 hand-written adversarial texts, 2000 random strings (some with invalid
// UTF-8) and 100 random id sequences to decode. Every one must match: ids, ids with special tokens, decode with and
// without skip_special_tokens.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"
#include "tokenizer_fixture.h"

namespace moetune {
namespace {

using tokenizer_test::describe;
using tokenizer_test::fixture_text;
using tokenizer_test::fixtures_dir;
using tokenizer_test::ids_string;

using tokenizer_test::kMaxReported;

class TokenizerFixture : public tokenizer_test::ExpectedIdsFixture {};

TEST_P(TokenizerFixture, HandWrittenCasesMatchHuggingFace) {
  const int failures = tokenizer_test::hand_written_case_failures(Tokenizer::from_folder(folder_), expected_, GetParam(), "HF");
  EXPECT_EQ(failures, 0) << "of " << expected_.at("cases").size() << " cases";
}

TEST_P(TokenizerFixture, RandomStringsMatchHuggingFace) {
  Tokenizer tok = Tokenizer::from_folder(folder_);
  nlohmann::json strings = tokenizer_test::read_json(fixtures_dir() + "/random_strings.json").at("strings");
  bool prefix_space = expected_.at("roundtrip") == "prefix_space";
  int failures = 0;
  size_t checked = 0;
  for (const auto& r : expected_.at("random")) {
    std::string text = fixture_text(strings.at(r.at("i").get<size_t>()));
    auto want = r.at("ids").get<std::vector<int32_t>>();
    auto got = tok.encode(text);
    std::string want_decoded;
    if (r.contains("decoded")) {
      want_decoded = r.at("decoded").get<std::string>();
    } else {  // HF's decode(encode(text)) is the text (as HF saw it), with a leading space for add_prefix_space
      want_decoded = utf8::replace_invalid(text);
      if (prefix_space && !want_decoded.empty() && want_decoded[0] != ' ') want_decoded = " " + want_decoded;
    }
    std::string decoded = tok.decode(got);
    ++checked;
    if ((got != want || decoded != want_decoded) && ++failures <= kMaxReported) {
      ADD_FAILURE() << GetParam() << " random #" << r.at("i") << " " << describe(text) << "\n  ids    HF "
                    << ids_string(want) << "\n         us " << ids_string(got) << "\n  decode HF "
                    << describe(want_decoded) << "\n         us " << describe(decoded);
    }
  }
  EXPECT_EQ(checked, 2000u);
  EXPECT_EQ(failures, 0) << "of " << checked << " random strings";
}

TEST_P(TokenizerFixture, RandomIdSequencesDecodeAsHuggingFace) {
  const int failures = tokenizer_test::decode_failures(Tokenizer::from_folder(folder_), expected_, GetParam(), "HF");
  EXPECT_EQ(failures, 0) << "of " << expected_.at("decode").size() << " id sequences";
}

TEST_P(TokenizerFixture, VocabularyMatchesHuggingFace) {
  Tokenizer tok = Tokenizer::from_folder(folder_);
  tokenizer_test::expect_vocabulary_matches(tok, expected_);
  EXPECT_EQ(tok.token_to_id("no such token \xF0\x9F\xA6\x84"), Tokenizer::kNoToken);
  EXPECT_EQ(tok.id_to_token(-1), std::nullopt);
  EXPECT_EQ(tok.id_to_token(tok.vocab_size() + 5), std::nullopt);
}

INSTANTIATE_TEST_SUITE_P(Tokenizer, TokenizerFixture, ::testing::ValuesIn(tokenizer_test::fixture_names()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
}  // namespace moetune

namespace moetune {
namespace {

// variants.json: small changes to the five fixtures (other Split behaviors, Metaspace schemes, Replace/Strip decoders,
// unk without byte fallback, Bert/Sequence post-processors, normalized added tokens under NFC, ...), each with HF's
// answers for the hand-written texts.
TEST(TokenizerVariants, MatchHuggingFace) {
  using tokenizer_test::describe;
  using tokenizer_test::ids_string;
  nlohmann::json data = tokenizer_test::read_json(tokenizer_test::fixtures_dir() + "/variants.json");
  const auto& texts = data.at("texts");
  size_t checked = 0;
  for (const auto& variant : data.at("variants")) {
    std::string name = variant.at("name");
    nlohmann::json spec =
        tokenizer_test::read_json(tokenizer_test::fixtures_dir() + "/" + variant.at("base").get<std::string>() +
                                  "/tokenizer.json");
    for (const auto& [key, value] : variant.at("patch").items()) spec[key] = value;
    for (const auto& [key, value] : variant.at("model_patch").items()) spec["model"][key] = value;
    Tokenizer tok = Tokenizer::from_json_string(spec.dump(), name + "/tokenizer.json");
    int failures = 0;
    const auto& cases = variant.at("cases");
    ASSERT_EQ(cases.size(), texts.size()) << name;
    for (size_t i = 0; i < cases.size(); ++i) {
      const auto& c = cases[i];
      std::string text = texts[i];
      auto want = c.at("ids").get<std::vector<int32_t>>();
      auto got = tok.encode(text);
      bool ok = got == want;
      if (c.contains("special")) ok = ok && tok.encode(text, true) == c.at("special").get<std::vector<int32_t>>();
      std::string decoded = tok.decode(want), skip = tok.decode(want, true);
      std::string want_decoded, want_skip;
      if (!c.contains("hf_panics")) {  // HF's Strip decoder panics on an empty text; moetune returns ""
        want_decoded = c.contains("decoded") ? c.at("decoded").get<std::string>() : text;
        want_skip = c.contains("skip") ? c.at("skip").get<std::string>() : want_decoded;
        ok = ok && decoded == want_decoded && skip == want_skip;
      }
      ++checked;
      if (!ok && ++failures <= 4) {
        ADD_FAILURE() << name << " text " << describe(text) << "\n  ids    HF " << ids_string(want) << "\n         us "
                      << ids_string(got) << "\n  decode HF " << describe(want_decoded) << "\n         us "
                      << describe(decoded) << "\n  skip   HF " << describe(want_skip) << "\n         us "
                      << describe(skip);
      }
    }
    EXPECT_EQ(failures, 0) << name << ": of " << cases.size() << " texts";
  }
  EXPECT_GT(checked, 1500u);
}

}  // namespace
}  // namespace moetune
