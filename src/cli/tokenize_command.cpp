// Why: `moetune tokenize`: tokenizes text, instruction or chat data ahead of training, on all cores with a progress bar,
// into a dataset cache (dataset/dataset_cache.h) that `moetune train --data CACHE` (or `--cache CACHE` with the same
// data) memory-maps. A cache that is already up to date (same data files, tokenizer, template and options) is kept.
#include <unistd.h>

#include <cstdio>
#include <memory>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/error.h"
#include "dataset/text_dataset.h"

namespace moetune::cli {

namespace {

std::vector<Option> tokenize_options() {
  return {
      {"model", "DIR", "", "model folder whose tokenizer.json (and chat template) to use"},
      {"tokenizer", "DIR", "", "folder with tokenizer.json (and tokenizer_config.json / chat_template.jinja); "
                               "default: --model"},
      {"data", "PATH", "", "JSONL of {\"text\"}, {\"prompt\", \"completion\"} or {\"messages\"} records, or a folder of "
                           "*.jsonl (read in name order)"},
      {"output", "CACHE", "", "the cache file to write"},
      {"format", "auto|text|prompt|chat", "auto", "shape of the records (auto: from the first record)"},
      {"chat-template-args", "JSON", "{}", "extra chat template variables, e.g. '{\"enable_thinking\": false}'"},
      {"bad-samples", "skip|fail", "fail", "a malformed record: fail naming file:line, or skip and count it"},
      {"threads", "N", "0", "tokenizing threads (0: all cores)"},
      {"force", "", "", "rebuild even when the cache is up to date"},
  };
}

}  // namespace

int tokenize_command(int argc, char** argv) {
  Args args("tokenize",
            "Tokenizes training data once into a memory-mapped cache for `moetune train --data CACHE`: text with the "
            "model's tokenizer.json, chats with its chat template, with the loss masks training uses.",
            tokenize_options());
  if (!args.parse(argc, argv)) return 0;
  if (!args.given("data") || !args.given("output"))
    throw UsageError{"moetune tokenize: --data and --output are required"};
  if (!args.given("model") && !args.given("tokenizer"))
    throw UsageError{"moetune tokenize: give --model or --tokenizer (a folder with tokenizer.json)"};
  if (args.text("bad-samples") != "skip" && args.text("bad-samples") != "fail")
    throw UsageError{"moetune tokenize: --bad-samples must be skip or fail"};
  if (args.integer("threads") < 0) throw UsageError{"moetune tokenize: --threads must be >= 0"};
  DataFormat format;
  try {
    format = parse_data_format(args.text("format"));
  } catch (const Error& error) {
    throw UsageError{str("moetune tokenize: ", error.what())};
  }
  nlohmann::ordered_json kwargs;
  try {
    kwargs = nlohmann::ordered_json::parse(args.text("chat-template-args"));
  } catch (const nlohmann::json::parse_error&) {
    kwargs = nullptr;
  }
  if (!kwargs.is_object())
    throw UsageError{str("moetune tokenize: --chat-template-args must be a JSON object, got ", args.text("chat-template-args"))};

  TextDataOptions options;
  options.data = args.text("data");
  options.format = format;
  options.tokenizer = args.given("tokenizer") ? args.text("tokenizer") : args.text("model");
  options.template_kwargs = kwargs;
  options.cache = args.text("output");
  options.build.threads = static_cast<int>(args.integer("threads"));
  options.build.skip_bad = args.text("bad-samples") == "skip";
  options.build.progress = true;
  if (DatasetCache::is_cache_file(options.data)) fail(options.data, ": is already a dataset cache");

  if (args.flag("force")) std::remove(options.cache.c_str());
  const std::unique_ptr<TextDataset> dataset = TextDataset::open(options);
  for (const std::string& line : dataset->describe()) std::fprintf(stderr, "%s\n", line.c_str());
  const nlohmann::ordered_json& header = dataset->cache().header();
  std::fprintf(stderr, "longest sample %lld tokens; train with: moetune train --data %s ...\n",
               static_cast<long long>(header.value("max_length", int64_t{0})), options.cache.c_str());
  return 0;
}

}  // namespace moetune::cli
