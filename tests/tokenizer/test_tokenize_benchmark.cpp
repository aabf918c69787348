// Why: tools/bench/tokenizer_throughput.py trusts `moetune tokenize --benchmark` for two things: the MB/s it prints
// (so the counts it divides by must be right) and the ids it writes (compared with Hugging Face's to prove the
// measured work is the real tokenization). Both are checked here on a small multilingual text, run from outside on the
// built binary: the ids must be exactly the library's encode() of each line, in line order, on 1 and 3 threads; the
// line rule (split on '\n', a final newline starts no line, empty lines kept) must be the script's; usage mistakes
// exit 2 and an unreadable text exits 1 naming the file.
#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../test_util.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer_fixture.h"

namespace moetune {
namespace {

using test_util::CommandResult;
using test_util::TempFolder;

using test_util::describe;
using test_util::quote;

// Runs `moetune <arguments>` with the temporary folder as working directory.
CommandResult moetune(const TempFolder& temp, const std::string& arguments) {
  return test_util::run_moetune(temp.path(), arguments);
}

std::string qwen_folder() { return tokenizer_test::fixtures_dir() + "/qwen2_bytelevel"; }

std::vector<int32_t> read_ids(const std::string& path) {
  const std::string bytes = tokenizer_test::read_text(path);
  std::vector<int32_t> ids(bytes.size() / 4);
  for (size_t i = 0; i < ids.size(); ++i) {
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data() + 4 * i);
    ids[i] = static_cast<int32_t>(p[0] | (p[1] << 8) | (p[2] << 16) | (static_cast<uint32_t>(p[3]) << 24));
  }
  return ids;
}

const std::vector<std::string> kLines = {"The quick brown fox jumps over the lazy dog.", "",
                                         "Die Straße ist nass, weil es geregnet hat.", "我们正在训练一个混合专家模型。",
                                         "  leading spaces\tand a tab 12345 🙂👩‍💻", "<|im_start|>user hi<|im_end|>"};

TEST(TokenizeBenchmark, IdsAreEncodeOfEachLineOnAnyThreadCount) {
  TempFolder temp;
  std::string text;
  for (const std::string& line : kLines) text += line + "\n";
  std::ofstream(temp.file("text.txt"), std::ios::binary) << text;

  const Tokenizer tokenizer = Tokenizer::from_folder(qwen_folder());
  std::vector<int32_t> expected;
  for (const std::string& line : kLines) {
    const std::vector<int32_t> ids = tokenizer.encode(line);
    expected.insert(expected.end(), ids.begin(), ids.end());
  }
  for (int threads : {1, 3}) {
    const std::string ids_file = "ids" + std::to_string(threads) + ".bin";
    const CommandResult result = moetune(temp, "tokenize --tokenizer " + quote(qwen_folder()) +
                                                   " --benchmark text.txt --repeat 2 --threads " +
                                                   std::to_string(threads) + " --ids " + ids_file);
    ASSERT_EQ(result.status, 0) << describe(result);
    const nlohmann::json report = nlohmann::json::parse(result.out);
    EXPECT_EQ(report.at("bytes").get<size_t>(), text.size());
    EXPECT_EQ(report.at("lines").get<size_t>(), kLines.size());
    EXPECT_EQ(report.at("tokens").get<size_t>(), expected.size());
    EXPECT_EQ(report.at("threads").get<int>(), threads);
    EXPECT_EQ(report.at("seconds").size(), 2u);
    EXPECT_GT(report.at("mb_per_s").get<double>(), 0.0);
    EXPECT_DOUBLE_EQ(report.at("mb_per_s_per_thread").get<double>() * threads, report.at("mb_per_s").get<double>());
    EXPECT_EQ(read_ids(temp.file(ids_file)), expected) << threads << " threads";
  }
}

TEST(TokenizeBenchmark, LastLineWithoutNewlineCountsOnce) {
  TempFolder temp;
  std::ofstream(temp.file("text.txt"), std::ios::binary) << "one\n\ntwo";
  const CommandResult result =
      moetune(temp, "tokenize --tokenizer " + quote(qwen_folder()) + " --benchmark text.txt --repeat 1");
  ASSERT_EQ(result.status, 0) << describe(result);
  EXPECT_EQ(nlohmann::json::parse(result.out).at("lines").get<int>(), 3);
}

TEST(TokenizeBenchmark, UsageAndInputErrors) {
  TempFolder temp;
  std::ofstream(temp.file("text.txt")) << "hello\n";
  const std::string tokenizer = " --tokenizer " + quote(qwen_folder());
  for (const std::string& arguments :
       {std::string("tokenize --benchmark text.txt"), "tokenize" + tokenizer + " --benchmark text.txt --data x.jsonl",
        "tokenize" + tokenizer + " --benchmark text.txt --repeat 0",
        "tokenize" + tokenizer + " --data x.jsonl --output c.bin --ids ids.bin"}) {
    const CommandResult result = moetune(temp, arguments);
    EXPECT_EQ(result.status, 2) << arguments << "\n" << describe(result);
  }
  const CommandResult missing = moetune(temp, "tokenize" + tokenizer + " --benchmark absent.txt");
  EXPECT_EQ(missing.status, 1) << describe(missing);
  EXPECT_NE(missing.err.find("absent.txt"), std::string::npos) << describe(missing);
  const CommandResult help = moetune(temp, "tokenize --help");
  EXPECT_NE(help.out.find("--benchmark FILE"), std::string::npos) << describe(help);
}

}  // namespace
}  // namespace moetune
