// Why: the user-facing path: `moetune train --data chats.jsonl` with a model folder that carries a tokenizer and chat
// template must tokenize (through the cache), split off validation samples, pack, train, and report validation loss
// and packing efficiency; `moetune tokenize` must build a cache train then reads; bad data must stop the run with one
// line naming file:line; GPU packing must be refused up front.
#include <gtest/gtest.h>

#include "dataset_test_util.h"
#include "../test_util.h"

namespace moetune {
namespace {

namespace fs = std::filesystem;
using dataset_test::chat_lines;
using dataset_test::make_model;
using dataset_test::write_lines;
using test_util::CommandResult;
using test_util::lines_of;
using test_util::TempFolder;

CommandResult moetune(const TempFolder& temp, const std::string& arguments) {
  return test_util::run_command(str("cd '", temp.path(), "' && MOETUNE_CACHE_DIR='", temp.path(), "/cache' '",
                                    test_util::cli_path(), "' ", arguments),
                                temp.path());
}

std::vector<nlohmann::json> metrics_of(const std::string& path) {
  std::vector<nlohmann::json> records;
  for (const std::string& line : lines_of(test_util::read_text(path))) records.push_back(nlohmann::json::parse(line));
  return records;
}

TEST(DatasetCli, TrainOnChatsWithPackingAndValidation) {
  TempFolder temp;
  make_model("qwen3", temp.file("model"));
  write_lines(temp.file("chats.jsonl"), chat_lines(60));
  const CommandResult run = moetune(temp, "train --model model --data chats.jsonl --packing on --val-fraction 0.2 "
                                          "--seq-len 128 --batch-size 2 --steps 4 --eval-every 2 --warmup 1 --output run");
  ASSERT_EQ(run.status, 0) << describe(run);
  EXPECT_NE(run.err.find("data: chat, 60 samples"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("(built now)"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("packing on"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("packing efficiency"), std::string::npos) << run.err;
  const auto records = metrics_of(temp.file("run/metrics.jsonl"));
  ASSERT_EQ(records.size(), 4u);
  for (const auto& record : records) {
    EXPECT_GT(record["packing_efficiency"].get<double>(), 0.5) << record;
    EXPECT_LE(record["packing_efficiency"].get<double>(), 1.0) << record;
  }
  EXPECT_TRUE(records[1].contains("eval_loss")) << records[1];
  EXPECT_TRUE(records[3].contains("eval_loss")) << records[3];
  const nlohmann::json summary = nlohmann::json::parse(test_util::read_text(temp.file("run/run.json")));
  EXPECT_GT(summary["packing_efficiency"].get<double>(), 0.5);

  // Same data again: the cache is reused.
  const CommandResult again = moetune(temp, "train --model model --data chats.jsonl --seq-len 128 --batch-size 2 "
                                            "--steps 1 --warmup 0 --output run2");
  ASSERT_EQ(again.status, 0) << describe(again);
  EXPECT_NE(again.err.find("(reused)"), std::string::npos) << again.err;
  EXPECT_NE(again.err.find("one sample per row"), std::string::npos) << again.err;
}

TEST(DatasetCli, TokenizeThenTrainFromTheCache) {
  TempFolder temp;
  make_model("qwen2", temp.file("model"));
  fs::create_directories(temp.file("data"));
  write_lines(temp.file("data/b.jsonl"), chat_lines(10));
  write_lines(temp.file("data/a.jsonl"), {R"({"messages": [{"role": "user", "content": "first"}, )"
                                          R"({"role": "assistant", "content": "file"}]})"});
  const CommandResult tokenize = moetune(temp, "tokenize --model model --data data --output chats.mtds --threads 3");
  ASSERT_EQ(tokenize.status, 0) << describe(tokenize);
  EXPECT_NE(tokenize.err.find("tokenize 100%"), std::string::npos) << tokenize.err;
  EXPECT_NE(tokenize.err.find("11 samples"), std::string::npos) << tokenize.err;
  const CommandResult again = moetune(temp, "tokenize --model model --data data --output chats.mtds");
  ASSERT_EQ(again.status, 0) << describe(again);
  EXPECT_NE(again.err.find("(reused)"), std::string::npos) << again.err;

  const CommandResult run = moetune(temp, "train --model model --data chats.mtds --seq-len 128 --batch-size 2 --steps 2 "
                                          "--warmup 0 --output run --epochs 0");
  ASSERT_EQ(run.status, 0) << describe(run);
  EXPECT_NE(run.err.find("chats.mtds (reused)"), std::string::npos) << run.err;
  // A cache made with another tokenizer is refused.
  make_model("olmoe", temp.file("other"));
  const CommandResult other = moetune(temp, "train --model other --data chats.mtds --seq-len 128 --steps 1 --output run3");
  EXPECT_EQ(other.status, 1) << describe(other);
  EXPECT_NE(other.err.find("another tokenizer than"), std::string::npos) << other.err;
}

TEST(DatasetCli, EpochsSetTheSteps) {
  TempFolder temp;
  make_model("qwen2", temp.file("model"));
  write_lines(temp.file("chats.jsonl"), chat_lines(9));
  const CommandResult run = moetune(temp, "train --model model --data chats.jsonl --seq-len 128 --batch-size 2 "
                                          "--epochs 2 --warmup 0 --output run");
  ASSERT_EQ(run.status, 0) << describe(run);
  EXPECT_NE(run.err.find("steps: 9 (2 epochs of 9 rows, 2 rows per step)"), std::string::npos) << run.err;
  EXPECT_EQ(metrics_of(temp.file("run/metrics.jsonl")).size(), 9u);
  const CommandResult both = moetune(temp, "train --model model --data chats.jsonl --epochs 2 --steps 3 --output r2");
  EXPECT_EQ(both.status, 2) << describe(both);
}

// Packed chat data resumes bit-identically: the rows of an epoch are a function of (seed, epoch), and the checkpoint
// records the row reached.
TEST(DatasetCli, PackedRunResumesBitIdentically) {
  TempFolder temp;
  make_model("qwen3", temp.file("model"));
  write_lines(temp.file("chats.jsonl"), chat_lines(30));
  const std::string flags = "train --model model --data chats.jsonl --packing on --val-fraction 0.2 --seq-len 128 "
                            "--batch-size 2 --grad-accum 2 --save-every 3 --eval-every 3 --warmup 1";
  const CommandResult straight = moetune(temp, flags + " --steps 6 --output straight");
  ASSERT_EQ(straight.status, 0) << describe(straight);
  const CommandResult first = moetune(temp, flags + " --steps 3 --schedule-steps 6 --output run");
  ASSERT_EQ(first.status, 0) << describe(first);
  const CommandResult resumed = moetune(temp, "train --resume run/checkpoints --steps 6");
  ASSERT_EQ(resumed.status, 0) << describe(resumed);
  const auto a = metrics_of(temp.file("run/metrics.jsonl")), b = metrics_of(temp.file("straight/metrics.jsonl"));
  ASSERT_EQ(a.size(), 6u);
  ASSERT_EQ(b.size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(a[i]["loss"], b[i]["loss"]) << i;
    EXPECT_EQ(a[i]["packing_efficiency"], b[i]["packing_efficiency"]) << i;
  }
  EXPECT_EQ(a[5]["eval_loss"], b[5]["eval_loss"]);
  EXPECT_EQ(test_util::read_text(temp.file("run/final/model.safetensors")),
            test_util::read_text(temp.file("straight/final/model.safetensors")));
  // The data changed since the checkpoint: refused.
  write_lines(temp.file("chats.jsonl"), chat_lines(31));
  const CommandResult changed = moetune(temp, "train --resume run/checkpoints/step-3 --steps 6 --output again");
  EXPECT_EQ(changed.status, 1) << describe(changed);
  EXPECT_NE(changed.err.find("the data changed since"), std::string::npos) << changed.err;
}

TEST(DatasetCli, BadDataStopsWithFileAndLine) {
  TempFolder temp;
  make_model("qwen2", temp.file("model"));
  std::vector<std::string> lines = chat_lines(5);
  lines.insert(lines.begin() + 3, R"({"messages": [{"role": "user", "content": "no answer"}]})");
  lines.insert(lines.begin() + 1, "");
  write_lines(temp.file("chats.jsonl"), lines);
  const CommandResult run = moetune(temp, "train --model model --data chats.jsonl --seq-len 128 --batch-size 2 --steps 1 "
                                          "--output run");
  EXPECT_EQ(run.status, 1) << describe(run);
  EXPECT_NE(run.err.find("chats.jsonl:5: no assistant message"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("--bad-samples skip"), std::string::npos) << run.err;

  const CommandResult skipped = moetune(temp, "train --model model --data chats.jsonl --seq-len 128 --batch-size 2 "
                                              "--steps 1 --warmup 0 --bad-samples skip --output run");
  ASSERT_EQ(skipped.status, 0) << describe(skipped);
  EXPECT_NE(skipped.err.find("1 bad samples left out"), std::string::npos) << skipped.err;
  EXPECT_NE(skipped.err.find("chats.jsonl:5: no assistant message"), std::string::npos) << skipped.err;

  // The cache built with skip holds the count; asking to fail on bad data refuses it.
  const CommandResult strict = moetune(temp, "train --model model --data chats.jsonl --seq-len 128 --batch-size 2 "
                                             "--steps 1 --output run");
  EXPECT_EQ(strict.status, 1) << describe(strict);
  EXPECT_NE(strict.err.find("chats.jsonl:5"), std::string::npos) << strict.err;

  const CommandResult long_samples = moetune(temp, "train --model model --data chats.jsonl --seq-len 8 --batch-size 1 "
                                                   "--steps 1 --bad-samples skip --output run");
  EXPECT_EQ(long_samples.status, 1) << describe(long_samples);
  EXPECT_NE(long_samples.err.find("chats.jsonl:1: sample has"), std::string::npos) << long_samples.err;
  EXPECT_NE(long_samples.err.find("longer than --seq-len 8"), std::string::npos) << long_samples.err;
}

TEST(DatasetCli, UsageErrors) {
  TempFolder temp;
  make_model("qwen2", temp.file("model"));
  write_lines(temp.file("chats.jsonl"), chat_lines(4));
  for (const char* flags : {"--packing maybe", "--bad-samples ignore", "--long-samples cut", "--val-fraction 1",
                            "--format yaml", "--chat-template-args [1]", "--recompute maybe"}) {
    const CommandResult result =
        moetune(temp, std::string("train --model model --data chats.jsonl --steps 1 --output out ") + flags);
    EXPECT_EQ(result.status, 2) << flags << "\n" << describe(result);
    EXPECT_EQ(lines_of(result.err).size(), 1u) << flags << "\n" << describe(result);
  }
  EXPECT_FALSE(fs::exists(temp.file("out")));
  const CommandResult no_tokenizer =
      moetune(temp, "train --data chats.jsonl --steps 1 --seq-len 32 --output out2");
  EXPECT_EQ(no_tokenizer.status, 1) << describe(no_tokenizer);
  EXPECT_NE(no_tokenizer.err.find("needs a tokenizer"), std::string::npos) << no_tokenizer.err;
  const CommandResult help = moetune(temp, "train --help");
  for (const char* option : {"--format ", "--packing ", "--val-fraction ", "--bad-samples ", "--long-samples ",
                             "--cache ", "--tokenizer ", "--chat-template-args ", "--epochs "})
    EXPECT_NE(help.out.find(option), std::string::npos) << option;
  const CommandResult tokenize_help = moetune(temp, "tokenize --help");
  EXPECT_EQ(tokenize_help.status, 0);
  EXPECT_NE(tokenize_help.out.find("--output CACHE"), std::string::npos) << tokenize_help.out;
}

}  // namespace
}  // namespace moetune
