// Why: shows the library API a user calls from their own program — from_pretrained (or a built-in config), a Trainer,
// and save_pretrained — the same calls `moetune train` is built on.
//
//   finetune_example [MODEL_DIR OUTPUT_DIR]   (no arguments: the built-in tiny MoE, saved to runs/example)
#include <cstdio>
#include <string>

#include "api/model.h"
#include "core/error.h"
#include "train/data.h"
#include "train/trainer.h"

int main(int argc, char** argv) {
  using namespace moetune;
  try {
    Model model = argc > 1 ? Model::from_pretrained(argv[1]) : Model::from_config(builtin_tiny_config(), 42);
    const std::string output = argc > 2 ? argv[2] : "runs/example";

    const int batch_size = 4, seq_len = 32, steps = 40;
    // Any token source works: here windows of the generated demo corpus.
    std::vector<Sample> windows;
    const std::vector<int32_t> corpus = generate_demo_tokens(model.config().vocab_size, 64 * seq_len, 7);
    for (size_t at = 0; at + seq_len <= corpus.size(); at += seq_len)
      windows.push_back({std::vector<int32_t>(corpus.begin() + at, corpus.begin() + at + seq_len), {}});
    const TokenDataset dataset = TokenDataset::from_samples(std::move(windows), DataOptions{model.config().vocab_size, seq_len});

    TrainOptions options;
    options.total_steps = steps;
    options.lr = 3e-3;
    options.warmup_steps = 4;
    Trainer trainer(model, options, batch_size, seq_len);
    BatchSampler sampler(dataset, batch_size, 0);
    for (int s = 0; s < steps; ++s) {
      const StepStats stats = trainer.step({sampler.next()});
      if (stats.step % 10 == 0) std::printf("step %ld loss %.4f\n", stats.step, stats.loss);
    }
    model.save_pretrained(output);
    std::printf("saved %s\n", output.c_str());
  } catch (const Error& error) {
    std::fprintf(stderr, "finetune_example: error: %s\n", error.what());
    return 1;
  }
  return 0;
}
