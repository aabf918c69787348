// Why: the moetune subcommands, each a thin layer over the library (api/, train/); main.cpp dispatches to them.
#pragma once

namespace moetune::cli {

// Each returns the process exit status; bad input is thrown as moetune::Error, bad flags as UsageError.
int train_command(int argc, char** argv);
int eval_command(int argc, char** argv);
int bench_command(int argc, char** argv);
int tokenize_command(int argc, char** argv);
int launch_command(int argc, char** argv);

}  // namespace moetune::cli
