// Why: the Unigram model (src/tokenizer/unigram.h) is pinned on whole tokenizers by the spm_unigram fixture, whose
// model has no byte fallback and few ties; these small vocabularies pin the rest on HF tokenizers 0.23.3 itself: the
// expected ids are what `Tokenizer(Unigram(vocab, unk_id, byte_fallback)).encode(text).ids` gives in Python. Also the
// one-line errors of a malformed Unigram model.
#include <gtest/gtest.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace moetune {
namespace {

using Vocab = std::vector<std::pair<std::string, double>>;

Tokenizer unigram(const Vocab& vocab, bool byte_fallback, int unk_id = 0) {
  nlohmann::json pieces = nlohmann::json::array();
  for (const auto& [piece, score] : vocab) pieces.push_back(nlohmann::json::array({piece, score}));
  const nlohmann::json model = {
      {"type", "Unigram"}, {"unk_id", unk_id}, {"vocab", pieces}, {"byte_fallback", byte_fallback}};
  return Tokenizer::from_json_string(nlohmann::json({{"model", model}}).dump(), "unigram test");
}

Vocab with_bytes(Vocab vocab, int bytes) {
  for (int b = 0; b < bytes; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    vocab.emplace_back(name, -5.0);
  }
  return vocab;
}

TEST(Unigram, BestPathAsHuggingFace) {
  // HF's own doc example: the best-scoring cut, and unknown characters fused into one <unk>.
  const Tokenizer doc = unigram({{"<unk>", 0}, {"a", 0}, {"b", 0}, {"c", 0}, {"d", 0}, {"cd", 1}, {"ab", 2}, {"abc", 5},
                                 {"abcd", 10}},
                                false);
  EXPECT_EQ(doc.encode("abcdacdxx"), (std::vector<int32_t>{8, 1, 5, 0}));
  // Equal scores: the first path found to a position stays ("a" + "bc", not "ab" + "c").
  const Tokenizer ties = unigram({{"<unk>", 0}, {"a", -1}, {"b", -1}, {"c", -1}, {"ab", -2}, {"bc", -2}}, false);
  EXPECT_EQ(ties.encode("abc"), (std::vector<int32_t>{1, 5}));
  EXPECT_EQ(ties.encode("abcabc"), (std::vector<int32_t>{1, 5, 1, 5}));
  EXPECT_EQ(ties.decode({1, 5}), "a bc");  // no decoder: tokens joined with spaces, as HF
}

TEST(Unigram, UnknownRunsFuseAndFallBackToBytes) {
  const Tokenizer bytes = unigram(with_bytes({{"<unk>", 0}, {"a", -1}, {"\xC3\xA9", -2}}, 256), true);
  // "üb": neither character is a piece, so the run becomes the bytes of "üb".
  EXPECT_EQ(bytes.encode("a\xC3\xBC" "b"), (std::vector<int32_t>{1, 198, 191, 101}));
  EXPECT_EQ(bytes.encode("a\xF0\x9F\x99\x82\xF0\x9F\x99\x82"),
            (std::vector<int32_t>{1, 243, 162, 156, 133, 243, 162, 156, 133}));
  EXPECT_EQ(bytes.encode("a\xC3\xA9"), (std::vector<int32_t>{1, 2}));
  // Only the bytes below 0x80 exist: "ü" (C3 BC) is <unk>, "xy" are bytes.
  const Tokenizer ascii_bytes = unigram(with_bytes({{"<unk>", 0}, {"a", -1}}, 0x80), true);
  EXPECT_EQ(ascii_bytes.encode("a\xC3\xBC"), (std::vector<int32_t>{1, 0}));
  EXPECT_EQ(ascii_bytes.encode("axy"), (std::vector<int32_t>{1, 122, 123}));
}

TEST(Unigram, TheUnknownPieceItselfFusesWithUnknownCharacters) {
  const Tokenizer tok =
      unigram({{"<unk>", 0}, {"a", -1}, {"<", -3}, {"u", -3}, {"n", -3}, {"k", -3}, {">", -3}}, false);
  EXPECT_EQ(tok.encode("a<unk>"), (std::vector<int32_t>{1, 0}));
  EXPECT_EQ(tok.encode("\xC3\xBC<unk>"), (std::vector<int32_t>{0}));
  EXPECT_EQ(tok.encode("<unk>\xC3\xBC"), (std::vector<int32_t>{0}));
  EXPECT_EQ(tok.encode("\xC3\xBC\xC3\xBC a"), (std::vector<int32_t>{0, 1}));
}

TEST(Unigram, MalformedModelsAreOneLineErrors) {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {R"({"type": "Unigram", "unk_id": 0, "vocab": []})", "model.vocab: the Unigram vocab is empty"},
      {R"({"type": "Unigram", "unk_id": null, "vocab": [["a", 0.0]]})", "model: unk_id is null"},
      {R"({"type": "Unigram", "unk_id": 3, "vocab": [["a", 0.0]]})", "model.unk_id: unk_id 3 is outside"},
      {R"({"type": "Unigram", "unk_id": 0, "vocab": [["a"]]})", "model.vocab[0]: expected [piece, score]"},
      {R"({"type": "Unigram", "unk_id": 0, "vocab": [["a", "x"]]})", "model.vocab[0][1]: expected a number"},
  };
  for (const auto& [model, where] : bad) {
    try {
      Tokenizer::from_json_string(R"({"model": )" + model + "}", "t.json");
      ADD_FAILURE() << model << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("t.json: " + where), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace moetune
