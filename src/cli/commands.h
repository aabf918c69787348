// Why: the moetune subcommands, each a thin layer over the library (api/, train/); main.cpp dispatches to them.
#pragma once

#include <string>

namespace moetune::cli {

// Each returns the process exit status; bad input is thrown as moetune::Error, bad flags as UsageError.
int train_command(int argc, char** argv);
int eval_command(int argc, char** argv);
int bench_command(int argc, char** argv);
int tokenize_command(int argc, char** argv);
int launch_command(int argc, char** argv);

// The values of --grouped-gemm (train, bench), checked before anything runs; the GPU engine parses them
// (cuda::parse_grouped_gemm_backend, which exists only in CUDA builds).
inline bool is_grouped_gemm_backend(const std::string& name) {
  return name == "sm90" || name == "moetune" || name == "cublas";
}

}  // namespace moetune::cli
