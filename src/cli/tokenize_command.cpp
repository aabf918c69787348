// Why: `moetune tokenize`: tokenizes text, instruction or chat data ahead of training, on all cores with a progress bar,
// into a dataset cache (dataset/dataset_cache.h) that `moetune train --data CACHE` (or `--cache CACHE` with the same
// data) memory-maps. A cache that is already up to date (same data files, tokenizer, template and options) is kept.
// `--benchmark FILE` measures the tokenizer alone instead (MB/s on N threads, one JSON line, optionally the ids), so
// tools/bench/tokenizer_throughput.py can compare it with Hugging Face `tokenizers` on the same text and check the ids.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string_view>
#include <thread>
#include <vector>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/error.h"
#include "dataset/text_dataset.h"
#include "tokenizer/tokenizer.h"

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
      {"benchmark", "FILE", "", "instead of a cache: time the tokenizer on FILE's lines (UTF-8; each line, without "
                                "its newline, encoded alone without special tokens, as HF's encode_batch(lines)) on "
                                "--threads threads, and print one JSON line with MB/s; needs --model or --tokenizer"},
      {"ids", "FILE", "", "with --benchmark: write every line's ids, in line order, as little-endian uint32"},
      {"repeat", "N", "2", "with --benchmark: timed runs (the first warms the BPE word cache; the best is reported)"},
  };
}

// The lines of `text`: split on '\n'; a final newline does not start one more (empty) line.
std::vector<std::string_view> split_lines(std::string_view text) {
  std::vector<std::string_view> lines;
  size_t start = 0;
  while (start < text.size()) {
    const size_t end = std::min(text.find('\n', start), text.size());
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

// Encodes every line on `threads` threads (blocks of lines handed out in order); blocks[i] holds the ids of block i.
std::vector<std::vector<int32_t>> encode_lines(const Tokenizer& tokenizer, const std::vector<std::string_view>& lines,
                                               int threads) {
  constexpr size_t kBlock = 256;
  std::vector<std::vector<int32_t>> blocks((lines.size() + kBlock - 1) / kBlock);
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t b = next.fetch_add(1); b < blocks.size(); b = next.fetch_add(1)) {
      const size_t end = std::min(lines.size(), (b + 1) * kBlock);
      for (size_t i = b * kBlock; i < end; ++i) {
        const std::vector<int32_t> ids = tokenizer.encode(lines[i]);
        blocks[b].insert(blocks[b].end(), ids.begin(), ids.end());
      }
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (std::thread& thread : pool) thread.join();
  return blocks;
}

int benchmark(const Args& args) {
  const std::string path = args.text("benchmark");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, ": cannot open the benchmark text");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  const std::vector<std::string_view> lines = split_lines(text);
  const Tokenizer tokenizer = Tokenizer::from_folder(args.given("tokenizer") ? args.text("tokenizer") : args.text("model"));
  const int threads = args.integer("threads") > 0 ? static_cast<int>(args.integer("threads"))
                                                  : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::vector<double> seconds;
  std::vector<std::vector<int32_t>> blocks;
  for (long run = 0; run < args.integer("repeat"); ++run) {
    const auto start = std::chrono::steady_clock::now();
    blocks = encode_lines(tokenizer, lines, threads);
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  size_t tokens = 0;
  for (const std::vector<int32_t>& block : blocks) tokens += block.size();
  if (args.given("ids")) {
    std::ofstream out(args.text("ids"), std::ios::binary);
    for (const std::vector<int32_t>& block : blocks)
      for (int32_t id : block) {
        const uint32_t v = static_cast<uint32_t>(id);
        const unsigned char bytes[4] = {static_cast<unsigned char>(v), static_cast<unsigned char>(v >> 8),
                                        static_cast<unsigned char>(v >> 16), static_cast<unsigned char>(v >> 24)};
        out.write(reinterpret_cast<const char*>(bytes), 4);
      }
    if (!out.flush()) fail(args.text("ids"), ": cannot write the ids");
  }
  const double best = *std::min_element(seconds.begin(), seconds.end());
  const double megabytes = static_cast<double>(text.size()) / 1e6;
  nlohmann::ordered_json report = {{"file", path},
                                   {"bytes", text.size()},
                                   {"lines", lines.size()},
                                   {"tokens", tokens},
                                   {"threads", threads},
                                   {"seconds", seconds},
                                   {"best_seconds", best},
                                   {"mb_per_s", megabytes / best},
                                   {"mb_per_s_per_thread", megabytes / best / threads}};
  std::printf("%s\n", report.dump().c_str());
  return 0;
}

}  // namespace

int tokenize_command(int argc, char** argv) {
  Args args("tokenize",
            "Tokenizes training data once into a memory-mapped cache for `moetune train --data CACHE`: text with the "
            "model's tokenizer.json, chats with its chat template, with the loss masks training uses. With --benchmark "
            "FILE it writes no cache and measures the tokenizer's throughput on FILE instead.",
            tokenize_options());
  if (!args.parse(argc, argv)) return 0;
  if (args.integer("threads") < 0) throw UsageError{"moetune tokenize: --threads must be >= 0"};
  if (args.given("benchmark")) {
    if (!args.given("model") && !args.given("tokenizer"))
      throw UsageError{"moetune tokenize --benchmark: give --model or --tokenizer (a folder with tokenizer.json)"};
    if (args.given("data") || args.given("output"))
      throw UsageError{"moetune tokenize --benchmark: writes no cache; leave out --data and --output"};
    if (args.integer("repeat") < 1) throw UsageError{"moetune tokenize: --repeat must be >= 1"};
    return benchmark(args);
  }
  if (args.given("ids") || args.given("repeat"))
    throw UsageError{"moetune tokenize: --ids and --repeat go with --benchmark"};
  if (!args.given("data") || !args.given("output"))
    throw UsageError{"moetune tokenize: --data and --output are required"};
  if (!args.given("model") && !args.given("tokenizer"))
    throw UsageError{"moetune tokenize: give --model or --tokenizer (a folder with tokenizer.json)"};
  if (args.text("bad-samples") != "skip" && args.text("bad-samples") != "fail")
    throw UsageError{"moetune tokenize: --bad-samples must be skip or fail"};
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
