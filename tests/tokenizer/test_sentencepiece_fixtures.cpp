// Why: a folder with only tokenizer.model is encoded through libsentencepiece plus Transformers' special-token rules
// (src/tokenizer/sentencepiece_tokenizer.h). tools/tokenizer/make_spm_fixtures.py trained two small models with the
// Python `sentencepiece` package (spm_bpe: Llama-shaped BPE with byte fallback; spm_unigram: T5-shaped unigram with
// <unk>, whitespace folding and user-defined pieces) and wrote the ids for the hand-written texts, the 2000 random
// strings and 100 random id sequences. Every one must match exactly, and decode must round-trip where sentencepiece's
// does. Also: tokenizer.json wins over tokenizer.model, and tokenizer_config.json options moetune does not implement
// are refused.
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"
#include "tokenizer_fixture.h"

namespace moetune {
namespace {

namespace fs = std::filesystem;
using tokenizer_test::describe;
using tokenizer_test::fixture_text;
using tokenizer_test::fixtures_dir;
using tokenizer_test::ids_string;

using tokenizer_test::kMaxReported;

class SentencePieceFixture : public tokenizer_test::ExpectedIdsFixture {};

TEST_P(SentencePieceFixture, LoadsFromTheFolderWithoutTokenizerJson) {
  ASSERT_FALSE(fs::exists(folder_ + "/tokenizer.json"));
  EXPECT_EQ(fs::path(Tokenizer::file_in_folder(folder_)).filename(), "tokenizer.model");
}

TEST_P(SentencePieceFixture, HandWrittenCasesMatchSentencePiece) {
  const int failures = tokenizer_test::hand_written_case_failures(Tokenizer::from_folder(folder_), expected_, GetParam(), "sp");
  EXPECT_EQ(failures, 0) << "of " << expected_.at("cases").size() << " cases";
}

TEST_P(SentencePieceFixture, RandomStringsMatchSentencePieceAndRoundTrip) {
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
      ADD_FAILURE() << GetParam() << " random #" << r.at("i") << " " << describe(text) << "\n  ids    sp "
                    << ids_string(want) << "\n         us " << ids_string(got) << "\n  decode sp "
                    << describe(want_decoded) << "\n         us " << describe(decoded);
    }
  }
  EXPECT_EQ(checked, 2000u);
  EXPECT_EQ(failures, 0) << "of " << checked << " random strings";
  EXPECT_GT(round_trips, 700) << "decode(encode(text)) == text for too few strings";
}

TEST_P(SentencePieceFixture, RandomIdSequencesDecodeAsSentencePiece) {
  const int failures = tokenizer_test::decode_failures(Tokenizer::from_folder(folder_), expected_, GetParam(), "sp");
  EXPECT_EQ(failures, 0) << "of " << expected_.at("decode").size() << " id sequences";
}

TEST_P(SentencePieceFixture, VocabularyAndSpecialTokens) {
  Tokenizer tok = Tokenizer::from_folder(folder_);
  EXPECT_EQ(tok.vocab_size(), expected_.at("vocab_size").get<int>());
  for (const auto& [token, id] : expected_.at("token_to_id").items()) {
    EXPECT_EQ(tok.token_to_id(token), id.get<int32_t>()) << token;
  }
  for (const auto& [id, token] : expected_.at("id_to_token").items()) {
    EXPECT_EQ(tok.id_to_token(std::stoi(id)), token.get<std::string>()) << id;
  }
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
      for (size_t i = 0; i < strings.size(); ++i) mismatches[t] += tok.encode(fixture_text(strings[i]), true) != serial[i];
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(mismatches[0] + mismatches[1], 0);
}

INSTANTIATE_TEST_SUITE_P(SentencePiece, SentencePieceFixture, ::testing::Values("spm_bpe", "spm_unigram"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

// A scratch folder under the test's temporary directory, removed afterwards.
class ScratchFolder {
 public:
  explicit ScratchFolder(const std::string& name) : path_(fs::path(::testing::TempDir()) / name) {
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~ScratchFolder() { fs::remove_all(path_); }
  std::string path() const { return path_.string(); }
  void copy(const std::string& from, const std::string& name) const { fs::copy_file(from, path_ / name); }
  void write(const std::string& name, const std::string& text) const { std::ofstream(path_ / name) << text; }

 private:
  fs::path path_;
};

TEST(SentencePieceFolder, TokenizerJsonWinsOverTokenizerModel) {
  ScratchFolder folder("moetune_spm_both");
  folder.copy(fixtures_dir() + "/mixtral_spm/tokenizer.json", "tokenizer.json");
  folder.copy(fixtures_dir() + "/spm_bpe/tokenizer.model", "tokenizer.model");
  EXPECT_EQ(fs::path(Tokenizer::file_in_folder(folder.path())).filename(), "tokenizer.json");
  const Tokenizer from_folder = Tokenizer::from_folder(folder.path());
  const Tokenizer json = Tokenizer::from_file(fixtures_dir() + "/mixtral_spm/tokenizer.json");
  const Tokenizer model = Tokenizer::from_folder(fixtures_dir() + "/spm_bpe");
  const std::string text = "Hello world, 我们正在训练 🙂 </s> x";
  EXPECT_EQ(from_folder.encode(text), json.encode(text));
  EXPECT_NE(from_folder.encode(text), model.encode(text));  // the two fixtures are different tokenizers
}

TEST(SentencePieceFolder, DefaultsWithoutTokenizerConfig) {
  ScratchFolder folder("moetune_spm_no_config");
  folder.copy(fixtures_dir() + "/spm_bpe/tokenizer.model", "tokenizer.model");
  const Tokenizer bare = Tokenizer::from_folder(folder.path());
  const Tokenizer configured = Tokenizer::from_folder(fixtures_dir() + "/spm_bpe");
  // The model's own <unk> <s> </s> are the special tokens, and LlamaTokenizer's add_bos_token=true applies.
  const std::string text = "<s>Hi</s> there<unk>";
  EXPECT_EQ(bare.encode(text, true), configured.encode(text, true));
  EXPECT_EQ(bare.encode("x", true).front(), bare.token_to_id("<s>"));
  EXPECT_EQ(bare.special_token_ids(), configured.special_token_ids());
}

TEST(SentencePieceFolder, NoTokenizerFileIsAnError) {
  ScratchFolder folder("moetune_spm_empty");
  EXPECT_THROW(Tokenizer::file_in_folder(folder.path()), Error);
  EXPECT_THROW(Tokenizer::from_folder(folder.path()), Error);
  folder.write("tokenizer.model", "not a protobuf");
  EXPECT_THROW(Tokenizer::from_folder(folder.path()), Error);
}

TEST(SentencePieceFolder, RefusesConfigOptionsItDoesNotImplement) {
  const std::vector<std::pair<std::string, std::string>> refused = {
      {R"({"legacy": false})", "legacy"},
      {R"({"add_prefix_space": false})", "add_prefix_space"},
      {R"({"sp_model_kwargs": {"enable_sampling": true}})", "sp_model_kwargs"},
      {R"({"bos_token": "<not a piece>"})", "bos_token"},
      {R"({"added_tokens_decoder": {"1": {"content": "</s>"}}})", "added_tokens_decoder"},
      {R"({"added_tokens_decoder": {"2": {"content": "</s>", "lstrip": true}}})", "lstrip"},
      {R"({"add_eos_token": true, "eos_token": null})", "add_eos_token"},
      {R"({"add_bos_token": "yes"})", "add_bos_token"},
      {R"([1, 2])", "tokenizer_config.json"},
  };
  for (const auto& [config, word] : refused) {
    ScratchFolder folder("moetune_spm_refused");
    folder.copy(fixtures_dir() + "/spm_bpe/tokenizer.model", "tokenizer.model");
    folder.write("tokenizer_config.json", config);
    try {
      Tokenizer::from_folder(folder.path());
      ADD_FAILURE() << config << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(word), std::string::npos) << config << ": " << e.what();
      EXPECT_NE(std::string(e.what()).find("tokenizer_config.json"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace moetune
