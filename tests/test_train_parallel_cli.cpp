// Why: `moetune train` run as several processes must refuse what it cannot do before any process waits for another:
// the CPU engine is one process, --ep/--dp need a launcher, the sizes must be sane, --ep-overlap is on or off, and
// --zero is a GPU option. These are one-line usage errors (exit 2), checked here with the launcher's environment set
// by hand (no GPU, no NCCL reached). The multi-GPU runs themselves are in tests/cuda/test_cuda_parallel_train_cli.cpp.
#include <gtest/gtest.h>

#include "test_util.h"

namespace moetune::testing {
namespace {

using test_util::CommandResult;
using test_util::describe;
using test_util::TempFolder;

// torchrun's variables for rank `rank` of a one-node world of `world`.
std::string torchrun_env(int rank, int world) {
  return "RANK=" + std::to_string(rank) + " WORLD_SIZE=" + std::to_string(world) + " LOCAL_RANK=" +
         std::to_string(rank) + " LOCAL_WORLD_SIZE=" + std::to_string(world) + " MASTER_ADDR=127.0.0.1 MASTER_PORT=29555 ";
}

CommandResult train(const TempFolder& temp, const std::string& env, const std::string& flags) {
  return test_util::run_command("cd " + test_util::quote(temp.path()) + " && env " + env +
                                    test_util::quote(test_util::cli_path()) + " train --steps 1 --seq-len 16 " + flags,
                                temp.path());
}

void expect_usage_error(const CommandResult& result, const std::string& part) {
  EXPECT_EQ(result.status, 2) << describe(result);
  EXPECT_EQ(test_util::lines_of(result.err).size(), 1u) << describe(result);
  EXPECT_NE(result.err.find(part), std::string::npos) << describe(result);
}

TEST(TrainParallelCli, CpuEngineIsOneProcess) {
  TempFolder temp;
  for (int rank : {0, 1}) {
    const CommandResult result = train(temp, torchrun_env(rank, 2), "--device cpu --output run");
    expect_usage_error(result, "2 processes (started by torchrun) need --device cuda");
  }
  expect_usage_error(train(temp, "", "--device cpu --ep 2"), "need --device cuda");
  EXPECT_FALSE(test_util::fs::exists(temp.file("run"))) << "no rank may write before the run is known to be valid";
}

TEST(TrainParallelCli, ParallelSizesNeedALauncher) {
  TempFolder temp;
  expect_usage_error(train(temp, "", "--device cuda --ep 2"), "moetune launch --nproc N -- train");
  expect_usage_error(train(temp, "", "--device cuda --dp 2"), "one process per GPU");
  expect_usage_error(train(temp, "", "--device cuda --ep 0"), "--ep must be >= 1");
  expect_usage_error(train(temp, "", "--device cuda --expert-capacity -1"), "--expert-capacity");
}

TEST(TrainParallelCli, ExchangeOverlapIsOnOrOff) {
  TempFolder temp;
  expect_usage_error(train(temp, "", "--device cuda --ep-overlap maybe"), "--ep-overlap must be on or off");
#ifdef MOETUNE_HAVE_CUDA  // checked before any GPU is touched; a build without CUDA refuses bench first
  expect_usage_error(test_util::run_moetune(temp.path(), "bench --ep-overlap maybe"), "--ep-overlap must be on or off");
#endif
  for (const char* command : {"train", "bench"}) {
    const CommandResult help = test_util::run_moetune(temp.path(), std::string(command) + " --help");
    EXPECT_EQ(help.status, 0) << describe(help);
    EXPECT_NE(help.out.find("--ep-overlap on|off"), std::string::npos) << command << "\n" << help.out;
  }
}

TEST(TrainParallelCli, GroupedGemmBackendIsCheckedFirst) {
  TempFolder temp;
  expect_usage_error(train(temp, "", "--device cuda --grouped-gemm foo --output run"),
                     "--grouped-gemm must be sm90, moetune or cublas");
  EXPECT_FALSE(test_util::fs::exists(temp.file("run"))) << "nothing may be written before the flags are checked";
#ifdef MOETUNE_HAVE_CUDA  // checked before any GPU is touched; a build without CUDA refuses bench first
  expect_usage_error(test_util::run_moetune(temp.path(), "bench --grouped-gemm foo"),
                     "--grouped-gemm must be sm90, moetune or cublas");
#endif
}

TEST(TrainParallelCli, ZeroIsForTheGpuEngine) {
  TempFolder temp;
  expect_usage_error(train(temp, "", "--device cpu --zero 1 --output run"), "--zero 1 shards the GPU trainer's");
  expect_usage_error(train(temp, "", "--device cuda --zero 2"), "--zero must be 0 or 1");
  EXPECT_FALSE(test_util::fs::exists(temp.file("run"))) << "no rank may write before the run is known to be valid";
  for (const char* command : {"train", "bench"}) {
    const CommandResult help = test_util::run_moetune(temp.path(), std::string(command) + " --help");
    EXPECT_EQ(help.status, 0) << describe(help);
    for (const char* part : {"--zero 0|1", "ZeRO-1", "o effect with one process"})
      EXPECT_NE(help.out.find(part), std::string::npos) << command << ": " << part << "\n" << help.out;
  }
}

TEST(TrainParallelCli, HelpExplainsThePerGpuBatch) {
  TempFolder temp;
  const CommandResult help = test_util::run_moetune(temp.path(), "train --help");
  EXPECT_EQ(help.status, 0) << describe(help);
  const std::string text = help.out + help.err;
  for (const char* name : {"--ep", "--dp", "--expert-capacity", "on each GPU"})
    EXPECT_NE(text.find(name), std::string::npos) << name << "\n" << text;
}

}  // namespace
}  // namespace moetune::testing
