// Why: `moetune train` and `moetune eval` read data the same way — token ids (train/data.h), or text, prompt/completion
// and chat JSONL tokenized with the model's tokenizer into the dataset cache and batched padded or packed
// (src/dataset/) — so the options that describe the data are declared here once, validated once, and turned into batch
// streams here for both commands.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cli/args.h"
#include "cli/rank_slices.h"
#include "dataset/text_dataset.h"
#include "model/config.h"
#include "train/data.h"

namespace moetune::cli {

// The data options both commands take: --format, --tokenizer, --chat-template-args, --packing, --bad-samples,
// --long-samples, --truncate-long, --cache, --threads.
std::vector<Option> data_options();

// Usage checks of the data options (UsageError naming `command`, e.g. "moetune eval"), before anything is read.
void check_data_args(const Args& args, const std::string& command);

// Held-out data: a fresh, unshuffled stream of its rows (every sample in exactly one row of the first `rows`), and how
// many rows and samples it has.
struct EvalSource {
  std::function<std::unique_ptr<BatchStream>()> stream;
  size_t rows = 0;
  size_t samples = 0;
};

// The training and validation data of a run: token ids (TokenDataset, the demo corpus) or text/instruction/chat data
// tokenized into a dataset cache (TextDataset).
struct RunData {
  std::string train_path;
  std::unique_ptr<TokenDataset> tokens;          // --format tokens
  std::unique_ptr<TokenDataset> eval_tokens;
  std::unique_ptr<TextDataset> text;             // text, prompt, chat, or a cache file
  std::unique_ptr<TextDataset> eval_text;        // --eval-data of those formats
  std::unique_ptr<BatchStream> stream;           // training batches (this rank's rows)
  const RankRows* rank_rows = nullptr;           // `stream` itself when the world has more than one rank
  std::optional<EvalSource> eval;
  double epoch_fill = -1.0;                      // real tokens / slots of the first epoch's rows (text data)
  size_t rows_per_epoch = 0;
};

// This process's place in a multi-GPU run (one process per GPU): every rank reads the same data and cache, the
// streams cut global batches of world x batch_size rows, and rank r trains and evaluates rows [r*B, (r+1)*B) of each
// (cli/rank_slices.h RankRows). Only the writer writes files (the demo corpus) and only the speaker prints: run rank 0
// first, then the others once it is done (they then find the demo corpus and a built cache).
struct RankPlace {
  int rank = 0, world = 1;
  bool writer = true;   // writes the generated demo corpus
  bool speaker = true;  // prints what it read
};

// `moetune train`'s data: --data (or the generated demo corpus, written into `output`), and --eval-data or the
// --val-fraction split. batch_size: rows per rank; RunData::stream and the eval streams give this rank's rows,
// RunData::rank_rows (world > 1) the global batch's token count; rows_per_epoch and EvalSource::rows count all rows.
RunData load_run_data(const Args& args, const ModelConfig& config, const std::filesystem::path& output, int batch_size,
                      int seq_len, uint64_t seed, const RankPlace& place = {});

// `moetune eval`'s data: --data read whole as held-out data, every sample once, in file order.
struct EvalData {
  std::unique_ptr<TokenDataset> tokens;  // token ids
  std::unique_ptr<TextDataset> text;     // text, prompt, chat, or a cache file
  EvalSource source;
};
EvalData load_eval_data(const Args& args, const ModelConfig& config, int batch_size, int seq_len);

}  // namespace moetune::cli
