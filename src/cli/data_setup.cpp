// Why: see data_setup.h. The code that reads a run's data moved here from train_command.cpp so that eval reads its
// data the same way.
#include "cli/data_setup.h"

#include <unistd.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace moetune::cli {

namespace fs = std::filesystem;

namespace {

TextDataOptions text_data_options(const Args& args, const std::string& data, DataFormat format,
                                  const std::string& command, bool speaker = true) {
  TextDataOptions options;
  options.data = data;
  options.format = format;
  options.tokenizer = args.given("tokenizer") ? args.text("tokenizer") : args.text("model");
  try {
    options.template_kwargs = nlohmann::ordered_json::parse(args.text("chat-template-args"));
  } catch (const nlohmann::json::parse_error&) {
    throw UsageError{str(command, ": --chat-template-args must be a JSON object, got ", args.text("chat-template-args"))};
  }
  if (!options.template_kwargs.is_object())
    throw UsageError{str(command, ": --chat-template-args must be a JSON object, got ", args.text("chat-template-args"))};
  options.cache = args.text("cache");
  options.build.threads = static_cast<int>(args.integer("threads"));
  options.build.skip_bad = args.text("bad-samples") == "skip";
  options.build.progress = speaker && ::isatty(STDERR_FILENO) != 0;
  return options;
}

DataOptions token_data_options(const Args& args, const ModelConfig& config, int seq_len) {
  return DataOptions{config.vocab_size, seq_len, 0,
                     args.flag("truncate-long") || args.text("long-samples") == "truncate"};
}

SampleSetOptions sample_set_options(const Args& args, const ModelConfig& config, int seq_len, double val_fraction,
                                    uint64_t seed) {
  SampleSetOptions sets;
  sets.seq_len = seq_len;
  sets.long_samples = args.flag("truncate-long") ? LongSamples::Truncate : parse_long_samples(args.text("long-samples"));
  sets.val_fraction = val_fraction;
  sets.split_seed = seed;
  sets.vocab_size = config.vocab_size;
  return sets;
}

EvalSource token_source(const TokenDataset* data, int batch_size) {
  return EvalSource{[data, batch_size] { return std::make_unique<BatchSampler>(*data, batch_size, 0, false); },
                    data->size(), data->size()};
}

EvalSource sample_source(const SampleSet* set, int batch_size, bool packing, int32_t pad) {
  const size_t rows = SequenceSampler(*set, batch_size, 0, false, packing, pad).rows_in_epoch();
  return EvalSource{[set, batch_size, packing, pad] {
                      return std::make_unique<SequenceSampler>(*set, batch_size, 0, false, packing, pad);
                    },
                    rows, set->size()};
}

// The same held-out rows seen by a multi-GPU run: `source` cuts global batches of world x batch_size rows, and each
// stream it makes gives this rank's rows of them.
EvalSource for_rank(EvalSource source, const RankPlace& place, int batch_size) {
  if (place.world == 1) return source;
  source.stream = [global = std::move(source.stream), place, batch_size] {
    return std::make_unique<RankRows>(global(), place.rank, place.world, batch_size);
  };
  return source;
}

}  // namespace

std::vector<Option> data_options() {
  return {
    {"format", "auto|text|prompt|chat|tokens", "auto", "shape of the data (auto: from the first record)"},
    {"tokenizer", "DIR", "", "folder with tokenizer.json (and tokenizer_config.json / chat_template.jinja for chat "
                             "data); default: --model"},
    {"chat-template-args", "JSON", "{}", "extra chat template variables, e.g. '{\"enable_thinking\": false}'"},
    {"packing", "on|off", "off", "several samples per sequence (positions restart and attention stays inside each "
                                 "sample; CPU only) instead of one padded sample per sequence"},
    {"bad-samples", "skip|fail", "fail", "a malformed record (bad JSON, missing or mistyped field, empty text, "
                                         "refused by the chat template): fail naming file:line, or skip and count it"},
    {"long-samples", "fail|truncate|drop", "fail", "a sample longer than --seq-len: fail naming file:line, cut it, or "
                                                   "leave it out"},
    {"truncate-long", "", "", "same as --long-samples truncate (also for token-id JSONL samples)"},
    {"cache", "PATH", "auto", "tokenized-data cache file, reused while data, tokenizer, template and options are "
                              "unchanged (auto: $MOETUNE_CACHE_DIR or ~/.cache/moetune/datasets/<hash>.mtds)"},
    {"threads", "N", "0", "threads tokenizing the data (0: all cores)"},
  };
}

void check_data_args(const Args& args, const std::string& command) {
  if (args.text("packing") != "on" && args.text("packing") != "off")
    throw UsageError{str(command, ": --packing must be on or off")};
  if (args.text("bad-samples") != "skip" && args.text("bad-samples") != "fail")
    throw UsageError{str(command, ": --bad-samples must be skip or fail")};
  const std::string long_samples = args.text("long-samples");
  if (long_samples != "fail" && long_samples != "truncate" && long_samples != "drop")
    throw UsageError{str(command, ": --long-samples must be fail, truncate or drop")};
  if (args.integer("threads") < 0) throw UsageError{str(command, ": --threads must be >= 0")};
  try {
    parse_data_format(args.text("format"));
  } catch (const Error& error) {
    throw UsageError{str(command, ": ", error.what())};
  }
  text_data_options(args, "", DataFormat::Auto, command);  // validates --chat-template-args
}

RunData load_run_data(const Args& args, const ModelConfig& config, const fs::path& output, int batch_size, int seq_len,
                      uint64_t seed, const RankPlace& place) {
  RunData data;
  const int global_batch = batch_size * place.world;  // rows per step over every rank
  // This rank's rows of the global stream (itself on one process).
  auto for_this_rank = [&](std::unique_ptr<BatchStream> global) -> std::unique_ptr<BatchStream> {
    if (place.world == 1) return global;
    auto rows = std::make_unique<RankRows>(std::move(global), place.rank, place.world, batch_size);
    data.rank_rows = rows.get();
    return rows;
  };
  const DataFormat requested = parse_data_format(args.text("format"));
  const bool packing = args.text("packing") == "on";
  const bool shuffle = args.text("shuffle") == "on";
  std::string train_path = args.text("data"), eval_path = args.text("eval-data");
  bool is_cache = false;
  DataFormat format = DataFormat::Tokens;
  if (args.given("data")) {
    format = resolve_data_format(train_path, requested, &is_cache);
  } else {
    if (requested != DataFormat::Auto && requested != DataFormat::Tokens)
      throw UsageError{str("moetune train: --format ", args.text("format"), " needs --data")};
    const std::vector<int32_t> corpus = generate_demo_tokens(config.vocab_size, 400000, 1234);
    const size_t held_out = corpus.size() / 10;
    train_path = (output / "train_tokens.bin").string();
    if (place.writer)
      write_token_file(train_path, std::vector<int32_t>(corpus.begin(), corpus.end() - static_cast<long>(held_out)));
    if (eval_path.empty()) {
      eval_path = (output / "eval_tokens.jsonl").string();
      if (place.writer)
        write_token_jsonl(eval_path, std::vector<int32_t>(corpus.end() - static_cast<long>(held_out), corpus.end()),
                          seq_len);
    }
    if (place.speaker)
      std::fprintf(stderr, "data: generated demo corpus, %zu training tokens -> %s\n", corpus.size() - held_out,
                   train_path.c_str());
  }
  data.train_path = train_path;

  if (format == DataFormat::Tokens && !is_cache) {
    if (packing) throw UsageError{"moetune train: --packing on needs text, prompt or chat data (token ids are read as rows)"};
    if (args.number("val-fraction") > 0)
      throw UsageError{"moetune train: --val-fraction needs text, prompt or chat data (give token ids --eval-data)"};
    const DataOptions data_options = token_data_options(args, config, seq_len);
    data.tokens = std::make_unique<TokenDataset>(TokenDataset::load(train_path, data_options));
    if (data.tokens->size() < static_cast<size_t>(global_batch))
      fail(train_path, ": ", data.tokens->size(), " sequences of ", seq_len, " tokens, fewer than one batch of ",
           global_batch);
    data.stream = for_this_rank(std::make_unique<BatchSampler>(*data.tokens, global_batch, seed, shuffle));
    data.rows_per_epoch = data.tokens->size();
    if (!eval_path.empty()) {
      data.eval_tokens = std::make_unique<TokenDataset>(TokenDataset::load(eval_path, data_options));
      data.eval = for_rank(token_source(data.eval_tokens.get(), global_batch), place, batch_size);
    }
    return data;
  }

  const SampleSetOptions sets = sample_set_options(args, config, seq_len, args.number("val-fraction"), seed);
  data.text = TextDataset::open(text_data_options(args, train_path, requested, "moetune train", place.speaker));
  data.text->select(sets);
  if (place.speaker)
    for (const std::string& line : data.text->describe()) std::fprintf(stderr, "%s\n", line.c_str());
  auto sampler = std::make_unique<SequenceSampler>(data.text->train(), global_batch, seed, shuffle, packing,
                                                   data.text->pad_id());
  data.epoch_fill = sampler->fill();
  data.rows_per_epoch = sampler->rows_in_epoch();
  if (place.speaker)
    std::fprintf(stderr, "data: %s, %zu rows of %d tokens per epoch, efficiency %.1f%% (real tokens / slots)\n",
                 packing ? "packing on" : "one sample per row (padding)", data.rows_per_epoch, seq_len,
                 100.0 * data.epoch_fill);
  if (data.rows_per_epoch < static_cast<size_t>(global_batch))
    fail(train_path, ": ", data.rows_per_epoch, " rows of ", seq_len, " tokens, fewer than one batch of ",
         global_batch);
  data.stream = for_this_rank(std::move(sampler));

  const SampleSet* validation = data.text->validation();
  if (!eval_path.empty()) {
    if (validation) throw UsageError{"moetune train: give --val-fraction or --eval-data, not both"};
    data.eval_text =
        TextDataset::open(text_data_options(args, eval_path, requested, "moetune train", place.speaker));
    SampleSetOptions eval_sets = sets;
    eval_sets.val_fraction = 0;
    data.eval_text->select(eval_sets);
    if (place.speaker)
      for (const std::string& line : data.eval_text->describe()) std::fprintf(stderr, "eval %s\n", line.c_str());
    validation = &data.eval_text->train();
  }
  if (validation)
    data.eval = for_rank(sample_source(validation, global_batch, packing, data.text->pad_id()), place, batch_size);
  return data;
}

EvalData load_eval_data(const Args& args, const ModelConfig& config, int batch_size, int seq_len) {
  EvalData data;
  const std::string path = args.text("data");
  const DataFormat requested = parse_data_format(args.text("format"));
  const bool packing = args.text("packing") == "on";
  bool is_cache = false;
  if (resolve_data_format(path, requested, &is_cache) == DataFormat::Tokens && !is_cache) {
    if (packing) throw UsageError{"moetune eval: --packing on needs text, prompt or chat data (token ids are read as rows)"};
    data.tokens = std::make_unique<TokenDataset>(TokenDataset::load(path, token_data_options(args, config, seq_len)));
    data.source = token_source(data.tokens.get(), batch_size);
    return data;
  }
  data.text = TextDataset::open(text_data_options(args, path, requested, "moetune eval"));
  data.text->select(sample_set_options(args, config, seq_len, 0.0, 0));
  for (const std::string& line : data.text->describe()) std::fprintf(stderr, "%s\n", line.c_str());
  data.source = sample_source(&data.text->train(), batch_size, packing, data.text->pad_id());
  if (data.source.rows == 0) fail(path, ": no sample to evaluate");
  return data;
}

}  // namespace moetune::cli
