// Why: the pieces under the fixture tests, each pinned on its own: the U+FFFD rule for invalid UTF-8 (the strings
// here are Python's b"...".decode("utf-8", errors="replace")), the Oniguruma -> PCRE2 rewrite, the one-line errors a
// malformed tokenizer.json must give (file + JSON path), concurrent encoding, and very long inputs.
#include <gtest/gtest.h>

#include <functional>
#include <initializer_list>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "tokenizer/json_path.h"
#include "tokenizer/regex.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"
#include "tokenizer_fixture.h"

namespace moetune {
namespace {

const std::string kFffd = "\xEF\xBF\xBD";

std::string repeat(const std::string& s, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += s;
  return out;
}

TEST(TokenizerUtf8, InvalidBytesBecomeOneReplacementPerMaximalSubpart) {
  struct Case {
    std::string in;
    std::string out;
  };
  // Expected values are Python 3.11's bytes.decode("utf-8", errors="replace").
  const std::vector<Case> cases = {
      {"", ""},
      {"plain ascii", "plain ascii"},
      {"\xC3\xA9\xE4\xB8\xAD\xF0\x9F\x99\x82", "\xC3\xA9\xE4\xB8\xAD\xF0\x9F\x99\x82"},
      {"\xFF", kFffd},
      {"abc\xE2\x82", "abc" + kFffd},                     // truncated 3-byte sequence: one U+FFFD
      {"\xC0\xAF", repeat(kFffd, 2)},                    // overlong lead byte: each byte
      {"\xE0\x80\xAF", repeat(kFffd, 3)},                // overlong 3-byte form
      {"\xED\xA0\x80", repeat(kFffd, 3)},                // surrogate
      {"\xF4\x90\x80\x80", repeat(kFffd, 4)},            // above U+10FFFF
      {"\xF0\x80\x80", repeat(kFffd, 3)},
      {"\xF0\x9F\x99 x", kFffd + " x"},                  // cut emoji: one U+FFFD
      {"\x80\x80\x80", repeat(kFffd, 3)},
      {"\xE4\xB8 \xE4\xB8\xAD", kFffd + " \xE4\xB8\xAD"},
      {"a\xC3", "a" + kFffd},
      {"\xF8\x88\x80\x80\x80", repeat(kFffd, 5)},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(utf8::replace_invalid(c.in), c.out) << tokenizer_test::describe(c.in);
    EXPECT_EQ(utf8::is_valid(c.in), c.in == c.out) << tokenizer_test::describe(c.in);
  }
}

TEST(TokenizerUtf8, EncodingInvalidBytesEqualsEncodingTheirReplacement) {
  Tokenizer tok = Tokenizer::from_folder(tokenizer_test::fixtures_dir() + "/qwen2_bytelevel");
  for (std::string bad : {"\xFFhello", "<|im_start|>\xFE<|im_end|>", "caf\xC3", "\xED\xA0\x80\xED\xB0\x80 pair"}) {
    EXPECT_EQ(tok.encode(bad), tok.encode(utf8::replace_invalid(bad)));
    EXPECT_EQ(tok.decode(tok.encode(bad)), utf8::replace_invalid(bad));
  }
}

TEST(TokenizerUtf8, CharacterClassesFollowRustRegex) {
  EXPECT_TRUE(utf8::is_white_space(0x85));    // NEL: White_Space (Oniguruma's and Rust's \s), not PCRE2's \s
  EXPECT_TRUE(utf8::is_white_space(0x3000));
  EXPECT_FALSE(utf8::is_white_space(0x200B));  // zero width space is not White_Space
  EXPECT_TRUE(utf8::is_word(0x301));           // combining mark
  EXPECT_TRUE(utf8::is_word('_'));
  EXPECT_TRUE(utf8::is_word(0x200D));          // Join_Control
  EXPECT_FALSE(utf8::is_word('-'));
  EXPECT_FALSE(utf8::is_word(0xB2));           // superscript two: No, not \w in Rust's regex
}

tokenizer_json::JsonAt where() {
  static const nlohmann::json null_value;
  return tokenizer_json::JsonAt(null_value, "t.json", "pre_tokenizer.pattern.Regex");
}

TEST(TokenizerRegex, OnigurumaSyntaxIsRewrittenForPcre2) {
  EXPECT_EQ(tokenizer::translate_oniguruma(R"([]^$.]|\.|(?i:'s))", where()), R"([]^$.]|\.|(?i:'s))");
  EXPECT_EQ(tokenizer::translate_oniguruma(R"(\u2581+[\u3000])", where()), R"(\x{2581}+[\x{3000}])");
  EXPECT_EQ(tokenizer::translate_oniguruma(R"(\h[\h])", where()), R"([\x{30}-\x{39}\x{41}-\x{46}\x{61}-\x{66}][\x{30}-\x{39}\x{41}-\x{46}\x{61}-\x{66}])");
}

TEST(TokenizerRegex, ConstructsThatDifferBetweenEnginesAreRefused) {
  for (const char* pattern : {"\\u12", "\\p{Klingon}", "\\p{L", "^a", "a$", "[a[b]]", "(?m:a)", "[a&&b]", "\\R", "(a"}) {
    try {
      tokenizer::Regex::oniguruma(pattern, where());
      ADD_FAILURE() << "accepted " << pattern;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("t.json: pre_tokenizer.pattern.Regex"), std::string::npos) << e.what();
    }
  }
}

TEST(TokenizerRegex, MatchesAreEnumeratedAsOnigFindIter) {
  auto matches = [](const std::string& pattern, const std::string& text) {
    std::vector<std::pair<size_t, size_t>> out;
    tokenizer::Regex::oniguruma(pattern, where()).for_each_match(text, [&](size_t s, size_t e) { out.emplace_back(s, e); });
    return out;
  };
  using M = std::vector<std::pair<size_t, size_t>>;
  EXPECT_EQ(matches("x*", "abxxc"), (M{{0, 0}, {1, 1}, {2, 4}, {5, 5}}));  // no empty match right after "xx"
  EXPECT_EQ(matches("\\s+", "a\xC2\x85" "b"), (M{{1, 3}}));               // NEL is \s, as in Oniguruma
  // Letters of Unicode 15.0 (CJK extension H), 15.1 (extension I) and 16.0 (Cyrillic TJE): HF's Oniguruma knows them.
  EXPECT_EQ(matches("\\p{L}+", "\xF0\xB1\x8D\x90\xF0\xAE\xAF\xB0\xE1\xB2\x89"), (M{{0, 11}}));
  EXPECT_EQ(matches("[^\\P{Letter}]", "a1"), (M{{0, 1}}));
  EXPECT_EQ(matches("\\p{^N}+", "a1b"), (M{{0, 1}, {2, 3}}));
  EXPECT_EQ(matches("\\pN", "a1b"), (M{{1, 2}}));
  EXPECT_EQ(matches("\\p{Han}", "\xE3\x80\x81\xE4\xB8\xAD"), (M{{3, 6}}));  // U+3001 is Common, not Han
  EXPECT_EQ(matches("\\p{N}", "\xD9\xA1" "2"), (M{{0, 2}, {2, 3}}));
  EXPECT_EQ(matches("(?i:'s)", "'S '\xC5\xBF"), (M{{0, 2}, {3, 6}}));      // long s folds to s
  EXPECT_EQ(matches(".+", "ab\r\ncd"), (M{{0, 3}, {4, 6}}));              // '.' stops at "\n" only
  EXPECT_EQ(matches("\\b", "e\xCC\x81 x"), (M{{0, 0}, {3, 3}, {4, 4}, {5, 5}}));  // a mark is a word character
}

// ---------------------------------------------------------------------------------------------------------------------
// Malformed tokenizer.json: one line naming the file and the JSON path.

nlohmann::json fixture_spec(const std::string& name) {
  return tokenizer_test::read_json(tokenizer_test::fixtures_dir() + "/" + name + "/tokenizer.json");
}

void expect_error(const nlohmann::json& spec, std::initializer_list<std::string> fragments) {
  try {
    Tokenizer::from_json_string(spec.dump(), "bad/tokenizer.json");
    ADD_FAILURE() << "loaded without error; expected one containing " << *fragments.begin();
  } catch (const Error& e) {
    std::string message = e.what();
    EXPECT_EQ(message.rfind("bad/tokenizer.json: ", 0), 0u) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    for (const auto& fragment : fragments) EXPECT_NE(message.find(fragment), std::string::npos) << message;
  }
}

TEST(TokenizerErrors, MalformedFilesNameTheFileAndJsonPath) {
  nlohmann::json qwen = fixture_spec("qwen2_bytelevel");
  nlohmann::json spm = fixture_spec("mixtral_spm");
  auto with = [](nlohmann::json spec, const std::function<void(nlohmann::json&)>& change) {
    change(spec);
    return spec;
  };
  expect_error(with(qwen, [](auto& s) { s.erase("model"); }), {"model: missing"});
  expect_error(with(qwen, [](auto& s) { s["model"]["type"] = "WordPiece"; }), {"model.type", "WordPiece"});
  expect_error(with(qwen, [](auto& s) { s["model"]["dropout"] = 0.1; }), {"model.dropout", "dropout"});
  expect_error(with(qwen, [](auto& s) { s["model"]["continuing_subword_prefix"] = "##"; }),
               {"model.continuing_subword_prefix"});
  expect_error(with(qwen, [](auto& s) { s["model"]["merges"][3] = "Ġ zzz"; }), {"model.merges[3]", "\"zzz\""});
  expect_error(with(qwen, [](auto& s) { s["model"]["merges"][4] = "a b c"; }), {"model.merges[4]", "one space"});
  expect_error(with(qwen, [](auto& s) { s["model"]["merges"][5] = 7; }), {"model.merges[5]"});
  expect_error(with(qwen, [](auto& s) { s["model"]["vocab"]["!"] = 5; }), {"model.vocab", "id 5"});
  expect_error(with(qwen, [](auto& s) { s["model"]["vocab"]["!"] = "x"; }), {"model.vocab[\"!\"]", "integer"});
  expect_error(with(spm, [](auto& s) { s["model"]["unk_token"] = "<nope>"; }), {"model.unk_token", "<nope>"});
  expect_error(with(qwen, [](auto& s) { s["normalizer"] = {{"type", "Lowercase"}}; }), {"normalizer.type", "Lowercase"});
  expect_error(with(qwen, [](auto& s) { s["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Sideways"; }),
               {"pre_tokenizer.pretokenizers[0].behavior", "Sideways"});
  expect_error(with(qwen, [](auto& s) { s["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "a$"; }),
               {"pre_tokenizer.pretokenizers[0].pattern.Regex", "'$'"});
  expect_error(with(qwen, [](auto& s) { s["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(a"; }),
               {"pre_tokenizer.pretokenizers[0].pattern.Regex", "cannot compile"});
  expect_error(with(qwen, [](auto& s) { s["pre_tokenizer"]["pretokenizers"][1]["type"] = "Whitespace"; }),
               {"pre_tokenizer.pretokenizers[1].type", "Whitespace"});
  expect_error(with(qwen, [](auto& s) { s["decoder"] = {{"type", "WordPiece"}}; }), {"decoder.type"});
  expect_error(with(qwen, [](auto& s) { s["post_processor"] = {{"type", "TemplateProcessing"},
                                                               {"single", {{{"SpecialToken", {{"id", "<bos>"}}}}}},
                                                               {"special_tokens", nlohmann::json::object()}}; }),
               {"post_processor.single[0].SpecialToken.id", "<bos>"});
  expect_error(with(qwen, [](auto& s) { s["added_tokens"][1]["id"] = 5; }),
               {"added_tokens[1].id", "<|im_start|>", "declares id 5"});
  expect_error(with(qwen, [](auto& s) { s["added_tokens"][2]["content"] = "<|im_start|>"; }),
               {"added_tokens[2].content", "twice"});
  expect_error(with(qwen, [](auto& s) { s["added_tokens"][0]["special"] = "yes"; }), {"added_tokens[0].special"});
  expect_error(with(qwen, [](auto& s) { s["truncation"] = {{"max_length", 512}}; }), {"truncation"});
  expect_error(with(qwen, [](auto& s) { s["padding"] = {{"strategy", {{"Fixed", 512}}}}; }), {"padding.strategy"});
  expect_error(with(qwen, [](auto& s) { s["version"] = "2.0"; }), {"version"});
  expect_error(with(spm, [](auto& s) { s["decoder"]["decoders"][3]["content"] = "ab"; }),
               {"decoder.decoders[3].content", "one character"});
  expect_error(with(spm, [](auto& s) { s["normalizer"]["normalizers"][1]["pattern"] = {{"Glob", "*"}}; }),
               {"normalizer.normalizers[1].pattern"});
  expect_error(nlohmann::json::array(), {"(top level)", "object"});
}

TEST(TokenizerErrors, UnreadableInputs) {
  try {
    Tokenizer::from_json_string("{\"model\": ", "cut/tokenizer.json");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cut/tokenizer.json: not valid JSON"), std::string::npos) << e.what();
  }
  try {
    Tokenizer::from_folder("/nonexistent/model");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/model/tokenizer.json: cannot open"), std::string::npos);
  }
}

// ---------------------------------------------------------------------------------------------------------------------

TEST(TokenizerApi, SpecialTokensAndAddSpecialTokens) {
  Tokenizer qwen = Tokenizer::from_folder(tokenizer_test::fixtures_dir() + "/qwen2_bytelevel");
  int32_t im_start = qwen.token_to_id("<|im_start|>"), think = qwen.token_to_id("<think>");
  EXPECT_TRUE(qwen.is_special(im_start));
  EXPECT_FALSE(qwen.is_special(think));  // Qwen3's <think> is an added token, not a special one
  EXPECT_FALSE(qwen.is_special(0));
  EXPECT_EQ(qwen.special_token_ids().size(), 3u);
  EXPECT_EQ(qwen.decode({im_start, think}, /*skip_special_tokens=*/true), "<think>");

  Tokenizer mixtral = Tokenizer::from_folder(tokenizer_test::fixtures_dir() + "/mixtral_spm");
  auto plain = mixtral.encode("Hello"), with_bos = mixtral.encode("Hello", /*add_special_tokens=*/true);
  ASSERT_EQ(with_bos.size(), plain.size() + 1);
  EXPECT_EQ(with_bos[0], mixtral.token_to_id("<s>"));
}

TEST(TokenizerConcurrency, ThreadsSharingOneTokenizerGetTheSerialIds) {
  Tokenizer tok = Tokenizer::from_folder(tokenizer_test::fixtures_dir() + "/qwen2_bytelevel");
  nlohmann::json strings = tokenizer_test::read_json(tokenizer_test::fixtures_dir() + "/random_strings.json").at("strings");
  std::vector<std::vector<int32_t>> serial;
  Tokenizer fresh = Tokenizer::from_folder(tokenizer_test::fixtures_dir() + "/qwen2_bytelevel");
  for (const auto& s : strings) serial.push_back(fresh.encode(tokenizer_test::fixture_text(s)));
  std::vector<std::vector<std::vector<int32_t>>> results(4);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < results.size(); ++t) {
    threads.emplace_back([&, t] {
      for (const auto& s : strings) results[t].push_back(tok.encode(tokenizer_test::fixture_text(s)));
    });
  }
  for (auto& thread : threads) thread.join();
  for (const auto& r : results) EXPECT_TRUE(r == serial);
}

TEST(TokenizerLongInput, RoundTripsAndMatchesPiecewiseEncoding) {
  // Paragraphs separated by a special token encode independently (added tokens cut the text before anything else),
  // so the ids of the long text are the concatenation of the pieces' ids.
  std::string paragraph = "The quick brown fox, 42 times: Größe 東京 🙂\n\t  code(x) -> y;   ";
  for (const char* name : {"qwen2_bytelevel", "mixtral_spm"}) {
    Tokenizer tok = Tokenizer::from_folder(tokenizer_test::fixtures_dir() + "/" + name);
    std::string sep = std::string(name) == "qwen2_bytelevel" ? "<|endoftext|>" : "</s>";
    std::string long_text;
    std::vector<int32_t> expected;
    auto piece_ids = tok.encode(paragraph);
    for (int i = 0; i < 2000; ++i) {
      long_text += paragraph + sep;
      expected.insert(expected.end(), piece_ids.begin(), piece_ids.end());
      expected.push_back(tok.token_to_id(sep));
    }
    EXPECT_EQ(tok.encode(long_text), expected) << name;
    // One 150 kB piece without separators (for mixtral_spm: a single BPE word, no pre-tokenizer).
    std::string one_piece = repeat(paragraph, 2000);
    auto ids = tok.encode(one_piece);
    EXPECT_GT(ids.size(), 2000u);
    std::string decoded = tok.decode(ids);
    EXPECT_EQ(decoded, one_piece) << name;
  }
}

}  // namespace
}  // namespace moetune

namespace moetune {
namespace {

// The SentencePiece speed-up (bpe.h: cut a word before each "▁" when no vocab token has "▁" after another character)
// must give the ids of BPE over the whole word. A vocab token "x▁" (reachable by no merge) switches the cut off; both
// tokenizers must then agree on every random string.
TEST(TokenizerBpe, CuttingBeforeMetaspaceGivesTheWholeWordIds) {
  nlohmann::json spec = tokenizer_test::read_json(tokenizer_test::fixtures_dir() + "/mixtral_spm/tokenizer.json");
  Tokenizer cut = Tokenizer::from_json_string(spec.dump());
  int32_t next_id = cut.vocab_size();
  // Shift the added tokens after the new vocab entry, as HF would number them.
  spec["model"]["vocab"]["x\xE2\x96\x81"] = next_id - 2;
  for (auto& token : spec["added_tokens"]) {
    if (token["id"].get<int>() >= next_id - 2) token["id"] = token["id"].get<int>() + 1;
  }
  Tokenizer whole = Tokenizer::from_json_string(spec.dump());
  nlohmann::json strings = tokenizer_test::read_json(tokenizer_test::fixtures_dir() + "/random_strings.json").at("strings");
  auto shift = [&](std::vector<int32_t> ids) {
    for (auto& id : ids) id += id >= next_id - 2 ? 1 : 0;
    return ids;
  };
  int differences = 0;
  for (const auto& s : strings) {
    std::string text = tokenizer_test::fixture_text(s);
    differences += shift(cut.encode(text)) != whole.encode(text);
  }
  EXPECT_EQ(differences, 0);
}

}  // namespace
}  // namespace moetune
