// Why: the CLI is what a user runs, so its contract is tested from outside, on the built binary: --help names every
// option, a bad flag exits 2, bad input exits 1 with one line on stderr naming the file and the item (after any progress
// lines), and a real (short) train + eval run writes every promised output. Each test runs in its own temporary folder.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "api/model.h"
#include "dataset/dataset_test_util.h"
#include "model/cpu_engine.h"
#include "test_util.h"

namespace moetune {
namespace {

namespace fs = std::filesystem;
using test_util::CommandResult;
using test_util::lines_of;
using test_util::TempFolder;

using test_util::describe;
using test_util::quote;

// Runs `moetune <arguments>` with the temporary folder as working directory.
CommandResult moetune(const TempFolder& temp, const std::string& arguments) {
  return test_util::run_moetune(temp.path(), arguments);
}

// Exit status 1 and the error as the last line of stderr (only progress lines, without "error", may precede it), naming
// each part.
void expect_input_error(const CommandResult& result, std::initializer_list<std::string> parts) {
  EXPECT_EQ(result.status, 1) << describe(result);
  const std::vector<std::string> lines = lines_of(result.err);
  ASSERT_FALSE(lines.empty()) << describe(result);
  const std::string& last = lines.back();
  EXPECT_NE(last.find("error"), std::string::npos) << describe(result);
  for (size_t i = 0; i + 1 < lines.size(); ++i)
    EXPECT_EQ(lines[i].find("error"), std::string::npos) << "error text before the last line:\n" << describe(result);
  for (const std::string& part : parts)
    EXPECT_NE(last.find(part), std::string::npos) << "the error line does not name \"" << part << "\"\n" << describe(result);
}

// No checkpoint (or anything that looks like the end of a run) under `output`.
void expect_no_finished_run(const std::string& output) {
  EXPECT_FALSE(fs::exists(output + "/final")) << output;
  EXPECT_FALSE(fs::exists(output + "/run.json")) << output;
  EXPECT_FALSE(fs::exists(output + "/final/config.json")) << output;
}

constexpr const char* kShortRun = "train --steps 3 --seq-len 32 --batch-size 2 --warmup 1";

// --- help and usage --------------------------------------------------------------------------------------------------

TEST(Cli, TopLevelHelp) {
  TempFolder temp;
  const CommandResult help = moetune(temp, "--help");
  EXPECT_EQ(help.status, 0) << describe(help);
  EXPECT_NE(help.out.find("train"), std::string::npos) << help.out;
  EXPECT_NE(help.out.find("eval"), std::string::npos) << help.out;
  const CommandResult none = moetune(temp, "");
  EXPECT_EQ(none.status, 2) << describe(none);
  const CommandResult unknown = moetune(temp, "finetune");
  EXPECT_EQ(unknown.status, 2) << describe(unknown);
  EXPECT_NE(unknown.err.find("finetune"), std::string::npos) << unknown.err;
}

void expect_help_names(const std::string& command, std::initializer_list<const char*> options) {
  TempFolder temp;
  const CommandResult help = moetune(temp, command + " --help");
  EXPECT_EQ(help.status, 0) << describe(help);
  for (const char* option : options)
    EXPECT_NE(help.out.find(std::string("--") + option + " "), std::string::npos)
        << command << " --help does not mention --" << option << "\n" << help.out;
  // Nothing was run: no output folder appeared.
  EXPECT_FALSE(fs::exists(temp.file("runs")));
}

TEST(Cli, TrainHelpNamesEveryOption) {
  expect_help_names("train", {"model", "data", "eval-data", "output", "steps", "batch-size", "seq-len", "grad-accum", "lr",
                              "schedule", "warmup", "weight-decay", "beta1", "beta2", "eps", "max-grad-norm", "aux-loss",
                              "seed", "eval-every", "truncate-long", "save-dtype", "save-layout", "help"});
}

TEST(Cli, EvalHelpNamesEveryOption) {
  expect_help_names("eval", {"model", "data", "format", "tokenizer", "chat-template-args", "packing", "bad-samples",
                             "long-samples", "cache", "threads", "batch-size", "seq-len", "device", "truncate-long",
                             "dump-logits", "help"});
}

TEST(Cli, BadFlagsAreUsageErrors) {
  TempFolder temp;
  for (const char* command : {"train", "eval"}) {
    const CommandResult result = moetune(temp, std::string(command) + " --no-such-flag 3");
    EXPECT_EQ(result.status, 2) << describe(result);
    EXPECT_NE(result.err.find("--no-such-flag"), std::string::npos) << describe(result);
    EXPECT_EQ(lines_of(result.err).size(), 1u) << describe(result);
  }
  const CommandResult missing_value = moetune(temp, "train --steps");
  EXPECT_EQ(missing_value.status, 2) << describe(missing_value);
  const CommandResult not_a_number = moetune(temp, "train --steps many --output out");
  EXPECT_EQ(not_a_number.status, 2) << describe(not_a_number);
  // Out-of-range values are refused before anything runs (--eval-every 0 used to divide by zero after training began).
  for (const char* flags : {"--eval-every 0", "--batch-size 0", "--seq-len 1", "--warmup -1", "--grad-accum 0",
                            "--save-dtype f8", "--save-layout sharded"}) {
    const CommandResult result = moetune(temp, std::string(kShortRun) + " " + flags + " --output out");
    EXPECT_EQ(result.status, 2) << flags << "\n" << describe(result);
    EXPECT_EQ(lines_of(result.err).size(), 1u) << flags << "\n" << describe(result);
  }
  EXPECT_FALSE(fs::exists(temp.file("out")));
  EXPECT_FALSE(fs::exists(temp.file("runs")));
}

// --- a real run ------------------------------------------------------------------------------------------------------

TEST(Cli, TrainThenEval) {
  TempFolder temp;
  const std::string out = temp.file("run");
  const CommandResult train = moetune(temp, std::string(kShortRun) + " --output run");
  ASSERT_EQ(train.status, 0) << describe(train);

  // metrics.jsonl: one JSON object per step.
  const std::vector<std::string> records = lines_of(test_util::read_text(out + "/metrics.jsonl"));
  ASSERT_EQ(records.size(), 3u);
  for (size_t i = 0; i < records.size(); ++i) {
    const nlohmann::json record = nlohmann::json::parse(records[i]);
    EXPECT_EQ(record.at("step"), static_cast<int>(i) + 1);
    EXPECT_TRUE(record.at("loss").is_number() && std::isfinite(record.at("loss").get<double>())) << records[i];
    EXPECT_GT(record.at("tokens_per_s").get<double>(), 0.0) << records[i];
  }
  EXPECT_NE(test_util::read_text(out + "/loss.svg").find("<svg"), std::string::npos);
  const nlohmann::json run = test_util::read_json(out + "/run.json");
  EXPECT_EQ(run.at("steps"), 3);
  const nlohmann::json config = test_util::read_json(out + "/final/config.json");
  EXPECT_EQ(config.at("model_type"), "qwen3_moe");
  EXPECT_EQ(config.at("dtype"), "float32");
  ASSERT_TRUE(fs::exists(out + "/final/model.safetensors"));
  EXPECT_EQ(test_util::staging_leftovers(out), std::vector<std::string>{});

  const std::string eval_data = out + "/eval_tokens.jsonl";
  const size_t samples = lines_of(test_util::read_text(eval_data)).size();
  ASSERT_GT(samples, 0u);
  const CommandResult eval =
      moetune(temp, "eval --model run/final --data run/eval_tokens.jsonl --seq-len 32 --dump-logits L.safetensors");
  ASSERT_EQ(eval.status, 0) << describe(eval);
  const size_t loss_at = eval.out.find("loss ");
  const size_t perplexity_at = eval.out.find("perplexity ");
  ASSERT_NE(loss_at, std::string::npos) << eval.out;
  ASSERT_NE(perplexity_at, std::string::npos) << eval.out;
  const double loss = std::stod(eval.out.substr(loss_at + 5));
  const double perplexity = std::stod(eval.out.substr(perplexity_at + 11));
  EXPECT_TRUE(std::isfinite(loss) && loss > 0) << eval.out;
  EXPECT_NEAR(perplexity, std::exp(loss), 1e-3 * perplexity) << eval.out;

  Model model = Model::from_pretrained(out + "/final");
  const int vocab = model.config().vocab_size;
  const SafetensorsFile dump = SafetensorsFile::open(temp.file("L.safetensors"));
  const TensorEntry* logits = dump.find("logits");
  ASSERT_NE(logits, nullptr);
  EXPECT_EQ(logits->dtype, DType::F32);
  EXPECT_EQ(logits->shape, (std::vector<int64_t>{static_cast<int64_t>(samples), 32, vocab}));
  const TensorEntry* ids = dump.find("input_ids");
  ASSERT_NE(ids, nullptr);
  EXPECT_EQ(ids->shape, (std::vector<int64_t>{static_cast<int64_t>(samples), 32}));

  // The dumped logits of the first sample are the model's logits for its ids.
  std::vector<int32_t> first_ids(32), first_labels(32);
  for (int t = 0; t < 32; ++t) {
    int64_t id;
    std::memcpy(&id, ids->data + 8 * t, 8);
    first_ids[t] = static_cast<int32_t>(id);
    first_labels[t] = first_ids[t];
  }
  CpuEngine engine(model.config(), 1, 32);
  const ModelWeights weights = model.weights();
  engine.forward(weights, first_ids.data(), first_labels.data());
  std::vector<float> dumped(static_cast<size_t>(32) * vocab);
  std::memcpy(dumped.data(), logits->data, dumped.size() * sizeof(float));
  double worst = 0.0;
  for (size_t i = 0; i < dumped.size(); ++i) worst = std::max(worst, std::fabs(double(dumped[i]) - engine.logits()[i]));
  EXPECT_LT(worst, 1e-4);
}

TEST(Cli, SameSeedSameLosses) {
  TempFolder temp;
  ASSERT_EQ(moetune(temp, std::string(kShortRun) + " --seed 5 --output a").status, 0);
  ASSERT_EQ(moetune(temp, std::string(kShortRun) + " --seed 5 --output b").status, 0);
  const auto losses = [&](const std::string& run) {
    std::vector<double> values;
    for (const std::string& line : lines_of(test_util::read_text(temp.file(run + "/metrics.jsonl"))))
      values.push_back(nlohmann::json::parse(line).at("loss").get<double>());
    return values;
  };
  EXPECT_EQ(losses("a").size(), 3u);
  EXPECT_EQ(losses("a"), losses("b"));
  EXPECT_EQ(test_util::read_text(temp.file("a/final/model.safetensors")),
            test_util::read_text(temp.file("b/final/model.safetensors")));
}

TEST(Cli, TrainFromAGoldenCheckpoint) {
  TempFolder temp;
  test_util::copy_golden("mixtral", temp.file("mixtral"));
  const CommandResult train =
      moetune(temp, std::string(kShortRun) + " --model mixtral --output run --save-dtype bf16 --save-layout fused");
  ASSERT_EQ(train.status, 0) << describe(train);
  const Model model = Model::from_pretrained(temp.file("run/final"));
  EXPECT_EQ(model.config().family, Family::Mixtral);
  EXPECT_EQ(test_util::read_json(temp.file("run/final/config.json")).at("dtype"), "bfloat16");
  // The source folder's generation_config.json travels with the checkpoint.
  EXPECT_TRUE(fs::exists(temp.file("run/final/generation_config.json")));
}

// `moetune eval` reads text data as train does (the model folder's tokenizer, through the cache) and counts every sample
// exactly once: padded or packed, in batches of 4 (the last one short) or of 1, the same tokens are scored, and the
// losses agree up to the order of the sums.
TEST(Cli, EvalOnTextJsonl) {
  TempFolder temp;
  dataset_test::make_model("qwen3", temp.file("model"));
  std::vector<std::string> lines;
  for (int i = 0; i < 10; ++i)
    lines.push_back(nlohmann::json({{"text", "sample " + std::to_string(i) + std::string(i % 4 + 1, 'a') + " is it on the "
                                                 "way, we do be " + std::to_string(i * 7)}})
                        .dump());
  dataset_test::write_lines(temp.file("text.jsonl"), lines);
  const auto eval = [&](const std::string& flags) {
    const CommandResult result = test_util::run_command(
        "cd " + quote(temp.path()) + " && MOETUNE_CACHE_DIR=" + quote(temp.file("cache")) + " " +
            quote(test_util::cli_path()) + " eval --model model --data text.jsonl --seq-len 64 " + flags,
        temp.path());
    EXPECT_EQ(result.status, 0) << flags << "\n" << describe(result);
    const size_t tokens_at = result.out.find("tokens "), loss_at = result.out.find("loss ");
    EXPECT_NE(result.out.find("samples 10 "), std::string::npos) << result.out;
    if (tokens_at == std::string::npos || loss_at == std::string::npos) {
      ADD_FAILURE() << result.out;
      return std::pair<long, double>{-1, 0.0};
    }
    return std::pair<long, double>{std::stol(result.out.substr(tokens_at + 7)), std::stod(result.out.substr(loss_at + 5))};
  };
  const auto padded = eval("--batch-size 4");
  const auto one_by_one = eval("--batch-size 1");
  const auto packed = eval("--batch-size 4 --packing on");
  EXPECT_GT(padded.first, 100);
  EXPECT_TRUE(std::isfinite(padded.second) && padded.second > 0);
  EXPECT_EQ(one_by_one.first, padded.first);
  EXPECT_EQ(packed.first, padded.first);
  EXPECT_NEAR(one_by_one.second, padded.second, 1e-5 * padded.second);
  EXPECT_NEAR(packed.second, padded.second, 1e-4 * padded.second);

  // The GPU engine has no logits to dump: refused before anything is read.
  for (const char* flags : {"--device cuda --dump-logits L.safetensors", "--device gpu"}) {
    const CommandResult result = moetune(temp, std::string("eval --model model --data text.jsonl ") + flags);
    EXPECT_EQ(result.status, 2) << flags << "\n" << describe(result);
    EXPECT_EQ(lines_of(result.err).size(), 1u) << describe(result);
  }
}

// --- bad input -------------------------------------------------------------------------------------------------------

// A trained checkpoint to evaluate, made once per test that needs one (a golden copy: no training needed).
std::string checkpoint(const TempFolder& temp) { return test_util::copy_golden("qwen3_moe", temp.file("ckpt")); }

TEST(Cli, ModelFolderWithoutConfig) {
  TempFolder temp;
  fs::create_directories(temp.file("empty"));
  test_util::write_text(temp.file("data.jsonl"), "{\"input_ids\": [1, 2, 3]}\n");
  const CommandResult result = moetune(temp, "eval --model empty --data data.jsonl --seq-len 8");
  expect_input_error(result, {"empty/config.json"});
  EXPECT_EQ(lines_of(result.err).size(), 1u) << describe(result);
  EXPECT_TRUE(result.out.empty()) << describe(result);
}

TEST(Cli, ConfigWithAnUnknownField) {
  TempFolder temp;
  const std::string folder = checkpoint(temp);
  nlohmann::json config = test_util::read_json(folder + "/config.json");
  config["expert_capacity"] = 2;
  test_util::write_json(folder + "/config.json", config);
  test_util::write_text(temp.file("data.jsonl"), "{\"input_ids\": [1, 2, 3]}\n");
  expect_input_error(moetune(temp, "eval --model ckpt --data data.jsonl --seq-len 8"),
                     {"ckpt/config.json", "\"expert_capacity\""});
  expect_input_error(moetune(temp, "train --model ckpt --steps 1 --seq-len 8 --output run"),
                     {"ckpt/config.json", "\"expert_capacity\""});
  expect_no_finished_run(temp.file("run"));
}

TEST(Cli, CheckpointWithATensorRemoved) {
  TempFolder temp;
  const std::string folder = checkpoint(temp);
  const std::string removed = "model.layers.2.mlp.experts.5.up_proj.weight";
  test_util::rewrite_safetensors(folder + "/model.safetensors", [&](TensorToWrite& t) { return t.name != removed; });
  const CommandResult result = moetune(temp, std::string(kShortRun) + " --model ckpt --output run");
  expect_input_error(result, {"ckpt", removed});
  EXPECT_EQ(result.err.find("step 1"), std::string::npos) << describe(result);
  expect_no_finished_run(temp.file("run"));
  test_util::write_text(temp.file("data.jsonl"), "{\"input_ids\": [1, 2, 3]}\n");
  expect_input_error(moetune(temp, "eval --model ckpt --data data.jsonl --seq-len 8"), {"ckpt", removed});
}

TEST(Cli, MissingDataFile) {
  TempFolder temp;
  checkpoint(temp);
  expect_input_error(moetune(temp, "eval --model ckpt --data nowhere.jsonl --seq-len 8"), {"nowhere.jsonl"});
  const CommandResult train = moetune(temp, std::string(kShortRun) + " --data nowhere.bin --output run");
  expect_input_error(train, {"nowhere.bin"});
  expect_no_finished_run(temp.file("run"));
  expect_input_error(moetune(temp, std::string(kShortRun) + " --eval-data nowhere.jsonl --output run2"),
                     {"nowhere.jsonl"});
  expect_no_finished_run(temp.file("run2"));
}

TEST(Cli, EmptyDataFile) {
  TempFolder temp;
  checkpoint(temp);
  test_util::write_text(temp.file("empty.jsonl"), "");
  test_util::write_text(temp.file("empty.bin"), "");
  test_util::write_text(temp.file("blank.jsonl"), "\n\n  \n");
  expect_input_error(moetune(temp, "eval --model ckpt --data empty.jsonl --seq-len 8"), {"empty.jsonl", "empty"});
  expect_input_error(moetune(temp, "eval --model ckpt --data blank.jsonl --seq-len 8"), {"blank.jsonl"});
  expect_input_error(moetune(temp, std::string(kShortRun) + " --data empty.bin --output run"), {"empty.bin", "empty"});
  expect_no_finished_run(temp.file("run"));
}

TEST(Cli, GarbageJsonlLineNamesTheLine) {
  TempFolder temp;
  checkpoint(temp);
  test_util::write_text(temp.file("bad.jsonl"),
                        "{\"input_ids\": [1, 2, 3]}\n{\"input_ids\": [4, 5]}\nthis is not json\n{\"input_ids\": [6]}\n");
  expect_input_error(moetune(temp, "eval --model ckpt --data bad.jsonl --seq-len 8"), {"bad.jsonl:3"});
  const CommandResult train = moetune(temp, "train --model ckpt --data bad.jsonl --steps 2 --seq-len 8 --batch-size 1 --output run");
  expect_input_error(train, {"bad.jsonl:3"});
  expect_no_finished_run(temp.file("run"));
}

TEST(Cli, TokenIdOutsideTheVocabulary) {
  TempFolder temp;
  const int vocab = test_util::read_json(checkpoint(temp) + "/config.json").at("vocab_size").get<int>();
  test_util::write_text(temp.file("big.jsonl"), "{\"input_ids\": [1, 2]}\n{\"input_ids\": [3, " + std::to_string(vocab) +
                                                    ", 4]}\n");
  expect_input_error(moetune(temp, "eval --model ckpt --data big.jsonl --seq-len 8"),
                     {"big.jsonl:2", "input_ids[1]", std::to_string(vocab)});
  // A flat uint32 file: the id at token 5 is out of range.
  std::string flat(4 * 64, '\0');
  flat[4 * 5] = static_cast<char>(vocab & 0xff);
  flat[4 * 5 + 1] = static_cast<char>(vocab >> 8);
  test_util::write_text(temp.file("big.bin"), flat);
  const CommandResult train =
      moetune(temp, "train --model ckpt --data big.bin --steps 2 --seq-len 8 --batch-size 1 --output run");
  expect_input_error(train, {"big.bin", "token 5", std::to_string(vocab)});
  expect_no_finished_run(temp.file("run"));
}

TEST(Cli, OutputUnderARegularFile) {
  TempFolder temp;
  test_util::write_text(temp.file("blocker"), "not a folder");
  const CommandResult result = moetune(temp, std::string(kShortRun) + " --output blocker/run");
  expect_input_error(result, {"blocker/run"});
  // Failed before any training: no progress lines, nothing written anywhere.
  EXPECT_EQ(lines_of(result.err).size(), 1u) << describe(result);
  EXPECT_EQ(test_util::read_text(temp.file("blocker")), "not a folder");
  std::vector<std::string> entries;
  for (const auto& entry : fs::directory_iterator(temp.path())) entries.push_back(entry.path().filename().string());
  EXPECT_EQ(entries, std::vector<std::string>{"blocker"});
}

TEST(Cli, EvalDumpLogitsUnderARegularFile) {
  TempFolder temp;
  checkpoint(temp);
  test_util::write_text(temp.file("data.jsonl"), "{\"input_ids\": [1, 2, 3]}\n");
  test_util::write_text(temp.file("blocker"), "not a folder");
  const CommandResult result = moetune(temp, "eval --model ckpt --data data.jsonl --seq-len 8 --dump-logits blocker/L.safetensors");
  expect_input_error(result, {"blocker/L.safetensors"});
  EXPECT_EQ(test_util::read_text(temp.file("blocker")), "not a folder");
}

}  // namespace
}  // namespace moetune
