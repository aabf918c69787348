// Why: the moetune command line. Every failure ends here as one line on stderr and a non-zero status:
// 1 for bad input (config, checkpoint, data, output folder), 2 for bad usage (flags).
#include <cstdio>
#include <cstring>
#include <exception>
#include <new>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/error.h"

namespace {

const char* kUsage =
    "usage: moetune <command> [options]\n"
    "\n"
    "Fine-tunes Mixture-of-Experts language models from Hugging Face checkpoints.\n"
    "\n"
    "commands:\n"
    "  train    train a model (a Hugging Face folder or the built-in tiny MoE) on text, chat or token data\n"
    "  eval     loss and perplexity of a checkpoint on token data\n"
    "  bench    training throughput of the CUDA engine on synthetic tokens (needs a GPU)\n"
    "  tokenize tokenize text, instruction or chat data once into a cache for train\n"
    "  launch   start N local processes of moetune (or --exec PROGRAM) with torchrun-style rank variables\n"
    "\n"
    "Run `moetune <command> --help` for a command's options. With no options, `moetune train` trains the built-in\n"
    "tiny MoE on a generated corpus on the CPU.\n";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const char* command = argv[1];
  try {
    if (std::strcmp(command, "train") == 0) return moetune::cli::train_command(argc - 2, argv + 2);
    if (std::strcmp(command, "eval") == 0) return moetune::cli::eval_command(argc - 2, argv + 2);
    if (std::strcmp(command, "bench") == 0) return moetune::cli::bench_command(argc - 2, argv + 2);
    if (std::strcmp(command, "tokenize") == 0) return moetune::cli::tokenize_command(argc - 2, argv + 2);
    if (std::strcmp(command, "launch") == 0) return moetune::cli::launch_command(argc - 2, argv + 2);
    std::fprintf(stderr, "moetune: unknown command \"%s\"\n\n%s", command, kUsage);
    return 2;
  } catch (const moetune::cli::UsageError& error) {
    std::fprintf(stderr, "%s\n", error.message.c_str());
    return 2;
  } catch (const moetune::Error& error) {
    std::fprintf(stderr, "\nmoetune %s: error: %s\n", command, error.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "\nmoetune %s: error: out of memory\n", command);
    return 1;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "\nmoetune %s: error: %s\n", command, error.what());
    return 1;
  }
}
