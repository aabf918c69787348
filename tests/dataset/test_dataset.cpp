// Why: the data path from JSONL to rows. Each record shape must give the ids and loss mask TRL's SFT gives (text: all
// tokens plus eos; prompt/completion: loss from the completion on; chat: tests/dataset/test_chat_fixtures.cpp); every
// kind of bad record must be caught with its file and line, counted when skipped; the cache must be reused while its
// inputs are unchanged and rebuilt when the data, tokenizer, template or options change, and be byte-identical for any
// thread count; the validation split and the padded rows must be deterministic.
#include <gtest/gtest.h>

#include <set>

#include "../test_util.h"
#include "dataset/dataset_cache.h"
#include "dataset/sample_encoder.h"
#include "dataset/sequence_sampler.h"
#include "dataset/text_dataset.h"
#include "dataset_test_util.h"

namespace moetune {
namespace {

namespace fs = std::filesystem;
using dataset_test::chat_fixture;
using dataset_test::chat_lines;
using dataset_test::write_lines;
using nlohmann::ordered_json;
using test_util::TempFolder;

std::string sample_error(const SampleEncoder& encoder, const std::string& line) {
  try {
    encoder.encode_line(line);
  } catch (const SampleError& error) {
    return error.what();
  }
  return "(accepted)";
}

// --- records -----------------------------------------------------------------------------------------------------------

TEST(DatasetEncoder, TextIsTokenizedWithSpecialTokensAndEos) {
  for (const std::string family : {"qwen2", "mixtral", "olmoe"}) {
    SCOPED_TRACE(family);
    const SampleEncoder encoder(chat_fixture(family), DataFormat::Text);
    const Tokenizer& tokenizer = encoder.tokenizer();
    const std::string text = "Hello world, this is a test.";
    const EncodedSample sample = encoder.encode_line(ordered_json({{"text", text}}).dump());
    std::vector<int32_t> expected = tokenizer.encode(text, true);
    if (expected.back() != encoder.eos_id()) expected.push_back(encoder.eos_id());
    EXPECT_EQ(sample.ids, expected);
    EXPECT_EQ(sample.loss, std::vector<uint8_t>(expected.size(), 1));
  }
  // Mixtral's post-processor adds <s>; OLMoE's appends <|endoftext|>, which is its eos (not doubled).
  const SampleEncoder mixtral(chat_fixture("mixtral"), DataFormat::Text);
  const EncodedSample m = mixtral.encode_line(R"({"text": "Hi"})");
  EXPECT_EQ(m.ids.front(), mixtral.tokenizer().token_to_id("<s>"));
  EXPECT_EQ(m.ids.back(), mixtral.tokenizer().token_to_id("</s>"));
  const SampleEncoder olmoe(chat_fixture("olmoe"), DataFormat::Text);
  const EncodedSample o = olmoe.encode_line(R"({"text": "Hi"})");
  EXPECT_EQ(o.ids.back(), olmoe.eos_id());
  EXPECT_NE(o.ids[o.ids.size() - 2], olmoe.eos_id());
}

TEST(DatasetEncoder, PromptCompletionTrainsOnTheCompletion) {
  const SampleEncoder encoder(chat_fixture("qwen2"), DataFormat::Prompt);
  const Tokenizer& tokenizer = encoder.tokenizer();
  const std::string prompt = "Translate to German:\n", completion = "Guten Morgen.";
  const EncodedSample sample =
      encoder.encode_line(ordered_json({{"prompt", prompt}, {"completion", completion}}).dump());
  std::vector<int32_t> expected = tokenizer.encode(prompt + completion, true);
  expected.push_back(encoder.eos_id());
  EXPECT_EQ(sample.ids, expected);
  const size_t prompt_tokens = tokenizer.encode(prompt, true).size();
  ASSERT_LT(prompt_tokens, sample.ids.size());
  for (size_t t = 0; t < sample.ids.size(); ++t) EXPECT_EQ(sample.loss[t], t >= prompt_tokens ? 1 : 0) << t;

  // A token spanning the seam (prompt "ab", completion "c" in one word) belongs to the completion, as Transformers'
  // char_to_token gives it.
  const EncodedSample seam = encoder.encode_line(R"({"prompt": "Hello wor", "completion": "ld"})");
  const std::vector<int32_t> whole = tokenizer.encode("Hello world", true);
  const std::vector<int32_t> prompt_alone = tokenizer.encode("Hello wor", true);
  size_t common = 0;
  while (common < prompt_alone.size() && prompt_alone[common] == whole[common]) ++common;
  size_t first_trained = 0;
  while (!seam.loss[first_trained]) ++first_trained;
  EXPECT_LE(first_trained, common);
  EXPECT_EQ(seam.loss.back(), 1);
}

// A model folder with only a SentencePiece tokenizer.model (Llama-shaped: BOS added, </s> the eos): text and
// prompt/completion records are tokenized with it, the completion's loss found through the SentencePiece pieces.
TEST(DatasetEncoder, SentencePieceModelFolder) {
  const std::string folder = test_util::source_dir() + "/tests/fixtures/tokenizer/spm_bpe";
  const SampleEncoder text(folder, DataFormat::Text);
  const std::string hello = "Hello world, this is a test.";
  const EncodedSample sample = text.encode_line(ordered_json({{"text", hello}}).dump());
  std::vector<int32_t> expected = text.tokenizer().encode(hello, true);
  ASSERT_NE(text.eos_id(), Tokenizer::kNoToken);
  if (expected.back() != text.eos_id()) expected.push_back(text.eos_id());
  EXPECT_EQ(sample.ids, expected);

  const SampleEncoder prompt(folder, DataFormat::Prompt);
  const EncodedSample pc = prompt.encode_line(R"({"prompt": "Translate to German: ", "completion": "Guten Morgen."})");
  const size_t prompt_tokens = prompt.tokenizer().encode("Translate to German: ", true).size();
  ASSERT_LT(prompt_tokens, pc.ids.size());
  size_t first_trained = 0;
  while (!pc.loss[first_trained]) ++first_trained;
  EXPECT_GE(first_trained + 1, prompt_tokens);  // the seam token may belong to the completion
  EXPECT_LE(first_trained, prompt_tokens);
  EXPECT_EQ(pc.loss.back(), 1);
  EXPECT_NE(SampleEncoder(folder, DataFormat::Text).fingerprint(), SampleEncoder(chat_fixture("mixtral"), DataFormat::Text).fingerprint());
}

// The cache key of a tokenizer.model folder follows what its conversion reads (config.json's model_type "mixtral"
// makes Transformers convert the model without any "▁" prefix: other ids), not the bytes of what it ignores.
TEST(DatasetEncoder, SentencePieceFingerprintFollowsTheConversion) {
  TempFolder temp;
  const std::string spm = test_util::source_dir() + "/tests/fixtures/tokenizer/spm_bpe";
  fs::copy_file(spm + "/tokenizer.model", temp.file("tokenizer.model"));
  fs::copy_file(spm + "/tokenizer_config.json", temp.file("tokenizer_config.json"));
  const uint64_t llama = tokenizer_fingerprint(temp.path());
  EXPECT_EQ(llama, tokenizer_fingerprint(spm));
  test_util::write_text(temp.file("config.json"), R"({"model_type": "mixtral"})");
  const uint64_t mixtral = tokenizer_fingerprint(temp.path());
  EXPECT_NE(mixtral, llama);
  test_util::write_text(temp.file("config.json"), R"({"model_type": "mixtral", "hidden_size": 64})");
  EXPECT_EQ(tokenizer_fingerprint(temp.path()), mixtral);
  EXPECT_NE(SampleEncoder(temp.path(), DataFormat::Text).tokenizer().encode("Hello"),
            Tokenizer::from_folder(spm).encode("Hello"));
}

// Chat data with a tokenizer.model folder: Mixtral's chat template over the Llama-shaped SentencePiece fixture. The
// tokens with loss, decoded, are exactly the assistant turns (their content and end-of-turn </s>): the aligner must
// map the rendered text's assistant spans to SentencePiece pieces ("▁" read as a space, <0xXX> as bytes).
TEST(DatasetEncoder, SentencePieceChatMasksTheAssistantTurns) {
  TempFolder temp;
  const std::string spm = test_util::source_dir() + "/tests/fixtures/tokenizer/spm_bpe";
  fs::copy_file(spm + "/tokenizer.model", temp.file("tokenizer.model"));
  ordered_json config = ordered_json::parse(test_util::read_text(spm + "/tokenizer_config.json"));
  config["chat_template"] =
      ordered_json::parse(test_util::read_text(chat_fixture("mixtral") + "/tokenizer_config.json"))["chat_template"];
  test_util::write_text(temp.file("tokenizer_config.json"), config.dump());
  const SampleEncoder encoder(temp.path(), DataFormat::Chat);
  const std::vector<std::string> answers = {"Paris is the capital of France.", "Ungefähr 2,1 Millionen — 🙂 ok\n"};
  const ordered_json record = {{"messages",
                                {{{"role", "user"}, {"content", "What is the capital of France?"}},
                                 {{"role", "assistant"}, {"content", answers[0]}},
                                 {{"role", "user"}, {"content", "How many people live there?"}},
                                 {{"role", "assistant"}, {"content", answers[1]}}}}};
  const EncodedSample sample = encoder.encode(record);
  std::vector<std::string> trained;  // each run of tokens with loss, decoded
  for (size_t t = 0; t < sample.ids.size(); ++t) {
    if (!sample.loss[t]) continue;
    std::vector<int32_t> run;
    while (t < sample.ids.size() && sample.loss[t]) run.push_back(sample.ids[t++]);
    std::string text = encoder.tokenizer().decode(run);
    if (!text.empty() && text.front() == ' ') text.erase(0, 1);  // the template's space before the answer, one token
    trained.push_back(text);
  }
  ASSERT_EQ(trained.size(), answers.size());
  for (size_t k = 0; k < answers.size(); ++k) EXPECT_EQ(trained[k], answers[k] + "</s>") << "assistant turn " << k;
}

TEST(DatasetEncoder, BadRecordsSayWhatIsWrong) {
  const SampleEncoder text(chat_fixture("qwen2"), DataFormat::Text);
  EXPECT_NE(sample_error(text, R"({"text": "unterminated)").find("malformed JSON at column"), std::string::npos);
  EXPECT_EQ(sample_error(text, R"(["text"])"), "line is not a JSON object (found array)");
  EXPECT_EQ(sample_error(text, R"({"txt": "a"})"), "missing \"text\"");
  EXPECT_EQ(sample_error(text, R"({"text": 5})"), "\"text\" is not a string (found number)");
  EXPECT_EQ(sample_error(text, R"({"text": "  \n "})"), "\"text\" is empty");
  const SampleEncoder prompt(chat_fixture("qwen2"), DataFormat::Prompt);
  EXPECT_EQ(sample_error(prompt, R"({"prompt": "a"})"), "missing \"completion\"");
  EXPECT_EQ(sample_error(prompt, R"({"prompt": "a", "completion": ""})"), "\"completion\" is empty");
  EXPECT_EQ(sample_error(prompt, R"({"prompt": null, "completion": "b"})"), "\"prompt\" is not a string (found null)");
  const SampleEncoder chat(chat_fixture("mixtral"), DataFormat::Chat);
  EXPECT_EQ(sample_error(chat, R"({"messages": {}})"), "\"messages\" is not an array (found object)");
  EXPECT_EQ(sample_error(chat, R"({"messages": []})"), "\"messages\" is empty");
  EXPECT_EQ(sample_error(chat, R"({"messages": [{"content": "x"}]})"), "messages[0]: missing \"role\"");
  EXPECT_EQ(sample_error(chat, R"({"messages": [{"role": 1, "content": "x"}]})"),
            "messages[0]: \"role\" is not a string (found number)");
  EXPECT_EQ(sample_error(chat, R"({"messages": [{"role": "user"}]})"), "messages[0]: missing \"content\"");
  EXPECT_EQ(sample_error(chat, R"({"messages": [{"role": "user", "content": 3}]})"),
            "messages[0]: \"content\" is not a string (found number)");
  EXPECT_EQ(sample_error(chat, R"({"messages": [{"role": "user", "content": "x"}]})"),
            "no assistant message (nothing to train on)");
  const std::string refused = sample_error(
      chat, R"({"messages": [{"role": "user", "content": "x"}, {"role": "user", "content": "y"}, )"
            R"({"role": "assistant", "content": "z"}]})");
  EXPECT_NE(refused.find("chat template: "), std::string::npos) << refused;
  EXPECT_NE(refused.find("conversation roles must alternate"), std::string::npos) << refused;
  EXPECT_NE(refused.find("tokenizer_config.json chat_template:"), std::string::npos) << refused;
}

TEST(DatasetEncoder, FormatDetection) {
  EXPECT_EQ(detect_format(ordered_json::parse(R"({"messages": []})")), DataFormat::Chat);
  EXPECT_EQ(detect_format(ordered_json::parse(R"({"prompt": "", "completion": ""})")), DataFormat::Prompt);
  EXPECT_EQ(detect_format(ordered_json::parse(R"({"text": ""})")), DataFormat::Text);
  EXPECT_EQ(detect_format(ordered_json::parse(R"({"input_ids": []})")), DataFormat::Tokens);
  EXPECT_EQ(detect_format(ordered_json::parse(R"({"prompt": ""})")), std::nullopt);
}

// --- bad data in files ------------------------------------------------------------------------------------------------

TEST(DatasetBadData, FirstBadLineFailsTheBuildNamingFileAndLine) {
  TempFolder temp;
  const SampleEncoder encoder(chat_fixture("qwen2"), DataFormat::Text);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"text": "ok"})" "\n" R"({"text": )", ":2: malformed JSON at column"},
      {"\n\n" R"({"text": ""})", ":3: \"text\" is empty"},
      {R"({"text": "ok"})" "\n" R"({"body": "x"})", ":2: missing \"text\""},
      {R"({"text": ["a"]})", ":1: \"text\" is not a string (found array)"},
      {R"(42)", ":1: line is not a JSON object (found number)"},
  };
  for (const auto& [content, expected] : cases) {
    test_util::write_text(temp.file("bad.jsonl"), content + "\n");
    try {
      DatasetCache::build(temp.file("bad.mtds"), {temp.file("bad.jsonl")}, encoder, {});
      ADD_FAILURE() << "accepted " << content;
    } catch (const Error& error) {
      EXPECT_NE(std::string(error.what()).find("bad.jsonl" + expected), std::string::npos) << error.what();
      EXPECT_NE(std::string(error.what()).find("--bad-samples skip"), std::string::npos) << error.what();
    }
    EXPECT_FALSE(fs::exists(temp.file("bad.mtds")));
  }
}

TEST(DatasetBadData, SkippedSamplesAreCountedWithFileAndLine) {
  TempFolder temp;
  const SampleEncoder encoder(chat_fixture("qwen2"), DataFormat::Text);
  write_lines(temp.file("mixed.jsonl"), {R"({"text": "one"})", "", R"({"text": 2})", R"({"text": "three"})", "{",
                                         "   ", R"({"text": ""})", R"({"text": "six"})"});
  CacheBuildOptions options;
  options.skip_bad = true;
  DatasetCache::build(temp.file("mixed.mtds"), {temp.file("mixed.jsonl")}, encoder, options);
  const DatasetCache cache = DatasetCache::open(temp.file("mixed.mtds"));
  EXPECT_EQ(cache.size(), 3u);
  EXPECT_EQ(cache.bad_count(), 3);
  EXPECT_EQ(cache.header()["blank_lines"], 2);
  const auto& examples = cache.header()["bad_samples"]["examples"];
  ASSERT_EQ(examples.size(), 3u);
  EXPECT_NE(examples[0].get<std::string>().find("mixed.jsonl:3: \"text\" is not a string"), std::string::npos);
  EXPECT_NE(examples[1].get<std::string>().find("mixed.jsonl:5: malformed JSON"), std::string::npos);
  EXPECT_NE(examples[2].get<std::string>().find("mixed.jsonl:7: \"text\" is empty"), std::string::npos);
  EXPECT_NE(cache.where(2).find("mixed.jsonl:8"), std::string::npos);
}

TEST(DatasetBadData, LongSamplesFailTruncateOrDrop) {
  TempFolder temp;
  const SampleEncoder encoder(chat_fixture("qwen2"), DataFormat::Text);
  write_lines(temp.file("d.jsonl"), {R"({"text": "short"})", R"({"text": "a much longer text than the others"})",
                                     R"({"text": "tiny"})"});
  DatasetCache::build(temp.file("d.mtds"), {temp.file("d.jsonl")}, encoder, {});
  const DatasetCache cache = DatasetCache::open(temp.file("d.mtds"));
  const uint32_t long_length = cache.sample(1).length;
  const int seq_len = static_cast<int>(std::max(cache.sample(0).length, cache.sample(2).length));
  ASSERT_GT(long_length, static_cast<uint32_t>(seq_len));
  SampleSetOptions options;
  options.seq_len = seq_len;
  try {
    SampleSet(cache, Split::Train, options);
    ADD_FAILURE();
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find(str("d.jsonl:2: sample has ", long_length, " tokens, longer than --seq-len ",
                                                 seq_len)),
              std::string::npos)
        << error.what();
  }
  options.long_samples = LongSamples::Drop;
  const SampleSet dropped(cache, Split::Train, options);
  EXPECT_EQ(dropped.size(), 2u);
  EXPECT_EQ(dropped.dropped_long(), 1);
  ASSERT_EQ(dropped.examples().size(), 1u);
  EXPECT_NE(dropped.examples()[0].find("d.jsonl:2: "), std::string::npos) << dropped.examples()[0];
  options.long_samples = LongSamples::Truncate;
  const SampleSet truncated(cache, Split::Train, options);
  EXPECT_EQ(truncated.size(), 3u);
  EXPECT_EQ(truncated.truncated(), 1);
  EXPECT_EQ(truncated.truncated_tokens(), static_cast<int64_t>(long_length) - seq_len);
  EXPECT_EQ(truncated.length(1), static_cast<uint32_t>(seq_len));
}

// --- the cache ----------------------------------------------------------------------------------------------------------

// A tokenizer folder of its own (so tests can change its files).
std::string own_tokenizer(const TempFolder& temp, const std::string& family) {
  const std::string folder = temp.file("tok-" + family);
  dataset_test::copy_tokenizer(family, folder);
  return folder;
}

TEST(DatasetCache, ReusedUntilDataTokenizerTemplateOrOptionsChange) {
  TempFolder temp;
  const std::string tokenizer = own_tokenizer(temp, "qwen2");
  write_lines(temp.file("chats.jsonl"), chat_lines(12));
  const std::vector<std::string> files = {temp.file("chats.jsonl")};
  auto open = [&](const ordered_json& kwargs = ordered_json::object()) {
    const SampleEncoder encoder(tokenizer, DataFormat::Chat, kwargs);
    bool built = false;
    const DatasetCache cache = DatasetCache::open_or_build(temp.file("c.mtds"), files, encoder, {}, &built);
    EXPECT_EQ(cache.size(), cache.header()["samples"].get<size_t>());
    return built;
  };
  EXPECT_TRUE(open());
  EXPECT_FALSE(open());
  EXPECT_FALSE(open());

  // The data: a line more.
  write_lines(temp.file("chats.jsonl"), chat_lines(13));
  EXPECT_TRUE(open());
  EXPECT_FALSE(open());
  // The data: same size, new modification time.
  fs::last_write_time(temp.file("chats.jsonl"), fs::last_write_time(temp.file("chats.jsonl")) + std::chrono::seconds(5));
  EXPECT_TRUE(open());
  // The tokenizer: tokenizer.json's bytes.
  test_util::write_text(tokenizer + "/tokenizer.json", test_util::read_text(tokenizer + "/tokenizer.json") + "\n");
  EXPECT_TRUE(open());
  EXPECT_FALSE(open());
  // The template.
  ordered_json config = ordered_json::parse(test_util::read_text(tokenizer + "/tokenizer_config.json"));
  config["chat_template"] = config["chat_template"].get<std::string>() + "{# changed #}";
  test_util::write_text(tokenizer + "/tokenizer_config.json", config.dump(2));
  EXPECT_TRUE(open());
  EXPECT_FALSE(open());
  // The options: template arguments.
  EXPECT_TRUE(open({{"enable_thinking", false}}));
  EXPECT_FALSE(open({{"enable_thinking", false}}));
  // The format (the same files read as something else are another cache).
  const SampleEncoder text(tokenizer, DataFormat::Text);
  write_lines(temp.file("texts.jsonl"), {R"({"text": "a"})"});
  bool built = false;
  DatasetCache::open_or_build(temp.file("c.mtds"), {temp.file("texts.jsonl")}, text, {}, &built);
  EXPECT_TRUE(built);
}

TEST(DatasetCache, DeterministicForAnyThreadCount) {
  TempFolder temp;
  std::vector<std::string> lines = chat_lines(50);
  lines.insert(lines.begin() + 7, R"({"messages": "broken"})");
  lines.insert(lines.begin() + 20, "");
  write_lines(temp.file("chats.jsonl"), lines);
  const SampleEncoder encoder(chat_fixture("qwen3"), DataFormat::Chat);
  std::string reference;
  for (const int threads : {1, 2, 3, 8}) {
    CacheBuildOptions options;
    options.threads = threads;
    options.skip_bad = true;
    options.lines_per_chunk = 7;
    const std::string path = temp.file("t" + std::to_string(threads) + ".mtds");
    DatasetCache::build(path, {temp.file("chats.jsonl")}, encoder, options);
    const std::string bytes = test_util::read_text(path);
    if (reference.empty()) reference = bytes;
    EXPECT_TRUE(bytes == reference) << threads << " threads wrote a different cache";
  }
  const DatasetCache cache = DatasetCache::open(temp.file("t1.mtds"));
  EXPECT_EQ(cache.size(), 50u);
  EXPECT_EQ(cache.bad_count(), 1);
  // Sample i is line i's conversation, encoded as the encoder alone encodes it.
  for (size_t i : {size_t{0}, size_t{9}, size_t{49}}) {
    const DatasetCache::SampleView view = cache.sample(i);
    const size_t line = view.line;
    const EncodedSample sample = encoder.encode_line(lines[line - 1]);
    ASSERT_EQ(view.length, sample.ids.size());
    EXPECT_TRUE(std::equal(sample.ids.begin(), sample.ids.end(), view.ids));
    EXPECT_TRUE(std::equal(sample.loss.begin(), sample.loss.end(), view.loss));
  }
}

TEST(DatasetCache, FolderFilesInNameOrderAndCorruptFilesRefused) {
  TempFolder temp;
  fs::create_directories(temp.file("data"));
  write_lines(temp.file("data/b.jsonl"), {R"({"text": "from b"})"});
  write_lines(temp.file("data/a.jsonl"), {R"({"text": "from a"})", R"({"text": "a again"})"});
  write_lines(temp.file("data/notes.txt"), {"ignored"});
  const std::vector<std::string> files = list_data_files(temp.file("data"));
  ASSERT_EQ(files.size(), 2u);
  EXPECT_NE(files[0].find("a.jsonl"), std::string::npos);
  const SampleEncoder encoder(chat_fixture("qwen2"), DataFormat::Text);
  DatasetCache::build(temp.file("d.mtds"), files, encoder, {});
  {
    const DatasetCache cache = DatasetCache::open(temp.file("d.mtds"));
    ASSERT_EQ(cache.size(), 3u);
    EXPECT_NE(cache.where(0).find("a.jsonl:1"), std::string::npos);
    EXPECT_NE(cache.where(2).find("b.jsonl:1"), std::string::npos);
    EXPECT_TRUE(DatasetCache::is_cache_file(temp.file("d.mtds")));
    EXPECT_FALSE(DatasetCache::is_cache_file(files[0]));
  }
  const std::string bytes = test_util::read_text(temp.file("d.mtds"));
  test_util::write_text(temp.file("cut.mtds"), bytes.substr(0, bytes.size() - 10));
  const std::string message = test_util::error_of([&] { DatasetCache::open(temp.file("cut.mtds")); });
  EXPECT_NE(message.find("cut.mtds"), std::string::npos) << message;
  EXPECT_EQ(detect_data_format(files), DataFormat::Text);
  EXPECT_NE(test_util::error_of([&] { list_data_files(temp.file("missing")); }).find("no such file"), std::string::npos);
}

// --- split and rows -----------------------------------------------------------------------------------------------------

TEST(DatasetSplit, SeededHashOfTheSampleIndex) {
  int held_out = 0;
  for (size_t i = 0; i < 20000; ++i) held_out += in_validation_split(i, 0.1, 42);
  EXPECT_GT(held_out, 1800);
  EXPECT_LT(held_out, 2200);
  int same = 0;
  for (size_t i = 0; i < 1000; ++i) same += in_validation_split(i, 0.5, 1) == in_validation_split(i, 0.5, 2);
  EXPECT_LT(same, 600);  // another seed, another split
  for (size_t i = 0; i < 1000; ++i) EXPECT_FALSE(in_validation_split(i, 0.0, 1));

  TempFolder temp;
  write_lines(temp.file("chats.jsonl"), chat_lines(200));
  const SampleEncoder encoder(chat_fixture("qwen2"), DataFormat::Chat);
  DatasetCache::build(temp.file("c.mtds"), {temp.file("chats.jsonl")}, encoder, {});
  const DatasetCache cache = DatasetCache::open(temp.file("c.mtds"));
  SampleSetOptions options;
  options.seq_len = 256;
  options.val_fraction = 0.25;
  options.split_seed = 3;
  const SampleSet train(cache, Split::Train, options), validation(cache, Split::Validation, options);
  EXPECT_EQ(train.size() + validation.size(), 200u);
  EXPECT_EQ(train.other_split(), static_cast<int64_t>(validation.size()));
  std::set<uint64_t> lines;
  for (size_t i = 0; i < train.size(); ++i) lines.insert(train.sample(i).line);
  for (size_t i = 0; i < validation.size(); ++i) EXPECT_EQ(lines.count(validation.sample(i).line), 0u);
}

TEST(DatasetSampler, PaddedRowsShuffledPerEpoch) {
  TempFolder temp;
  write_lines(temp.file("texts.jsonl"), {R"({"text": "one"})", R"({"text": "two two"})", R"({"text": "three 3 3"})",
                                         R"({"text": "four"})", R"({"text": "five"})"});
  const SampleEncoder encoder(chat_fixture("qwen2"), DataFormat::Text);
  DatasetCache::build(temp.file("t.mtds"), {temp.file("texts.jsonl")}, encoder, {});
  const DatasetCache cache = DatasetCache::open(temp.file("t.mtds"));
  SampleSetOptions options;
  options.seq_len = 16;
  const SampleSet set(cache, Split::Train, options);
  SequenceSampler sampler(set, 1, 7, true, false, encoder.pad_id());
  EXPECT_EQ(sampler.rows_in_epoch(), 5u);
  std::vector<std::vector<int32_t>> epochs[2];
  for (int e = 0; e < 2; ++e)
    for (int r = 0; r < 5; ++r) {
      const Batch batch = sampler.next();
      EXPECT_FALSE(batch.packed());
      int real = 0;
      for (int t = 0; t < 16; ++t) {
        if (batch.labels[t] == kIgnoreLabel) {
          EXPECT_EQ(batch.input_ids[t], encoder.pad_id());
        } else {
          ++real;
        }
      }
      EXPECT_EQ(batch.real_tokens, real);
      epochs[e].push_back(std::vector<int32_t>(batch.input_ids.begin(), batch.input_ids.begin() + real));
    }
  EXPECT_EQ(sampler.epoch(), 2);
  auto sorted = [](std::vector<std::vector<int32_t>> rows) {
    std::sort(rows.begin(), rows.end());
    return rows;
  };
  EXPECT_EQ(sorted(epochs[0]), sorted(epochs[1]));  // every sample once per epoch
  EXPECT_NE(epochs[0], epochs[1]);                  // in another order
}

}  // namespace
}  // namespace moetune
