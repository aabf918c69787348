// Why: a folder with a tokenizer.model and no tokenizer.json must give the ids Transformers 5.17 gives when it loads
// the folder, which converts the SentencePiece model into a `tokenizers` tokenizer (src/tokenizer/
// sentencepiece_conversion.h). tools/tokenizer/make_spm_fixtures.py trained two small models with the `sentencepiece`
// package (spm_bpe: a LlamaTokenizer folder, BPE with byte fallback; spm_unigram: a Mixtral-architecture folder whose
// unigram model Transformers converts with its generic TokenizersBackend) and wrote what AutoTokenizer gives: the
// converted tokenizer itself, ids for the hand-written texts and the 2000 random strings, and decodes of 100 random id
// sequences. Every one must match exactly, and the decode of the ids must be Transformers' decode (the text itself
// where that round-trips). Also: tokenizer.json wins over tokenizer.model, and a broken tokenizer.model is an error.
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "tokenizer/sentencepiece_conversion.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"
#include "../test_util.h"
#include "tokenizer_fixture.h"

namespace moetune {
namespace {

namespace fs = std::filesystem;
using tokenizer_test::describe;
using tokenizer_test::fixture_text;
using tokenizer_test::fixtures_dir;
using tokenizer_test::ids_string;
using tokenizer_test::kMaxReported;
using test_util::TempFolder;

class SentencePieceFixture : public tokenizer_test::ExpectedIdsFixture {};

TEST_P(SentencePieceFixture, LoadsFromTheFolderWithoutTokenizerJson) {
  ASSERT_FALSE(fs::exists(folder_ + "/tokenizer.json"));
  EXPECT_EQ(fs::path(Tokenizer::file_in_folder(folder_)).filename(), "tokenizer.model");
}

// The whole converted tokenizer (pre-tokenizer, normalizer, decoder, post-processor, added tokens, BPE merges) is the
// one Transformers builds; only the vocabulary (the pieces in order) is left out of the fixture.
TEST_P(SentencePieceFixture, ConvertsAsTransformers) {
  nlohmann::json converted = tokenizer::convert_sentencepiece_folder(folder_);
  converted["model"].erase("vocab");
  const nlohmann::json& want = expected_.at("converted");
  EXPECT_EQ(converted, want) << "difference (JSON patch from moetune to Transformers): "
                             << nlohmann::json::diff(converted, want).dump();
}

TEST_P(SentencePieceFixture, HandWrittenCasesMatchTransformers) {
  const int failures =
      tokenizer_test::hand_written_case_failures(Tokenizer::from_folder(folder_), expected_, GetParam(), "HF");
  EXPECT_EQ(failures, 0) << "of " << expected_.at("cases").size() << " cases";
}

TEST_P(SentencePieceFixture, RandomStringsMatchTransformersAndDecodeAsIt) {
  Tokenizer tok = Tokenizer::from_folder(folder_);
  nlohmann::json strings = tokenizer_test::read_json(fixtures_dir() + "/random_strings.json").at("strings");
  int failures = 0, round_trips = 0;
  size_t checked = 0;
  for (const auto& r : expected_.at("random")) {
    std::string text = fixture_text(strings.at(r.at("i").get<size_t>()));
    auto want = r.at("ids").get<std::vector<int32_t>>();
    auto got = tok.encode(text);
    const bool round_trip = !r.contains("decoded");
    std::string want_decoded = round_trip ? utf8::replace_invalid(text) : r.at("decoded").get<std::string>();
    std::string decoded = tok.decode(got);
    ++checked;
    round_trips += round_trip && decoded == want_decoded;
    if ((got != want || decoded != want_decoded) && ++failures <= kMaxReported) {
      ADD_FAILURE() << GetParam() << " random #" << r.at("i") << " " << describe(text) << "\n  ids    HF "
                    << ids_string(want) << "\n         us " << ids_string(got) << "\n  decode HF "
                    << describe(want_decoded) << "\n         us " << describe(decoded);
    }
  }
  EXPECT_EQ(checked, 2000u);
  EXPECT_EQ(failures, 0) << "of " << checked << " random strings";
  EXPECT_GT(round_trips, 700) << "decode(encode(text)) == text for too few strings";
}

TEST_P(SentencePieceFixture, RandomIdSequencesDecodeAsTransformers) {
  const int failures = tokenizer_test::decode_failures(Tokenizer::from_folder(folder_), expected_, GetParam(), "HF");
  EXPECT_EQ(failures, 0) << "of " << expected_.at("decode").size() << " id sequences";
}

TEST_P(SentencePieceFixture, VocabularyAndSpecialTokens) {
  Tokenizer tok = Tokenizer::from_folder(folder_);
  tokenizer_test::expect_vocabulary_matches(tok, expected_);
  const auto special = expected_.at("special_ids").get<std::vector<int32_t>>();
  EXPECT_EQ(tok.special_token_ids(), special);
  for (int32_t id = 0; id < tok.vocab_size(); ++id) {
    EXPECT_EQ(tok.is_special(id), std::find(special.begin(), special.end(), id) != special.end()) << id;
  }
  EXPECT_EQ(tok.token_to_id("no such token \xF0\x9F\xA6\x84"), Tokenizer::kNoToken);
  EXPECT_EQ(tok.id_to_token(-1), std::nullopt);
  EXPECT_EQ(tok.id_to_token(tok.vocab_size()), std::nullopt);
  EXPECT_FALSE(tok.is_special(tok.vocab_size() + 3));
}

TEST_P(SentencePieceFixture, ConcurrentEncodesGiveTheSerialIds) {
  const Tokenizer tok = Tokenizer::from_folder(folder_);
  nlohmann::json strings = tokenizer_test::read_json(fixtures_dir() + "/random_strings.json").at("strings");
  std::vector<std::vector<int32_t>> serial;
  for (const auto& s : strings) serial.push_back(tok.encode(fixture_text(s), true));
  std::vector<int> mismatches(2, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      for (size_t i = 0; i < strings.size(); ++i) {
        mismatches[t] += tok.encode(fixture_text(strings[i]), true) != serial[i];
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(mismatches[0] + mismatches[1], 0);
}

INSTANTIATE_TEST_SUITE_P(SentencePiece, SentencePieceFixture, ::testing::Values("spm_bpe", "spm_unigram"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

TEST(SentencePieceFolder, TokenizerJsonWinsOverTokenizerModel) {
  TempFolder folder;
  fs::copy_file(fixtures_dir() + "/mixtral_spm/tokenizer.json", folder.file("tokenizer.json"));
  fs::copy_file(fixtures_dir() + "/spm_bpe/tokenizer.model", folder.file("tokenizer.model"));
  EXPECT_EQ(fs::path(Tokenizer::file_in_folder(folder.path())).filename(), "tokenizer.json");
  const Tokenizer from_folder = Tokenizer::from_folder(folder.path());
  const Tokenizer json = Tokenizer::from_file(fixtures_dir() + "/mixtral_spm/tokenizer.json");
  const Tokenizer model = Tokenizer::from_folder(fixtures_dir() + "/spm_bpe");
  const std::string text = "Hello world, 我们正在训练 🙂 </s> x";
  EXPECT_EQ(from_folder.encode(text), json.encode(text));
  EXPECT_NE(from_folder.encode(text), model.encode(text));  // the two fixtures are different tokenizers
  EXPECT_EQ(Tokenizer::json_in_folder(folder.path()),
            tokenizer_test::read_text(fixtures_dir() + "/mixtral_spm/tokenizer.json"));
}

TEST(SentencePieceFolder, NoTokenizerFileOrABrokenOneIsAnError) {
  TempFolder folder;
  EXPECT_THROW(Tokenizer::file_in_folder(folder.path()), Error);
  EXPECT_THROW(Tokenizer::from_folder(folder.path()), Error);
  for (const std::string bytes : {std::string("not a protobuf"), std::string(), std::string("\x0a\x05\x0a\x03", 4)}) {
    test_util::write_text(folder.file("tokenizer.model"), bytes);
    try {
      Tokenizer::from_folder(folder.path());
      ADD_FAILURE() << describe(bytes) << " was read as a SentencePiece model";
    } catch (const Error& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find("tokenizer.model: not a SentencePiece model"), std::string::npos) << message;
    }
  }
}

}  // namespace
}  // namespace moetune
