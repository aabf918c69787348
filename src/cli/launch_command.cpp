// Why: `moetune launch --nproc N -- <moetune arguments>`: the N processes of a one-node multi-GPU run, started by moetune
// itself with torchrun's variables (parallel/local_launcher.h has the behaviour: prefixed output, forwarded signals, a
// failing rank stops the others). `--exec PROGRAM` runs another program instead of moetune, for scripts and tests.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <string>
#include <vector>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/error.h"
#include "parallel/local_launcher.h"

namespace moetune::cli {

namespace {

Args launch_args() {
  return Args("launch",
              "Starts N local processes of one run (one per GPU), with torchrun's variables RANK, WORLD_SIZE,\n"
              "LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1 and MASTER_PORT set in each:\n"
              "  moetune launch --nproc N [options] -- <moetune command and options>\n"
              "  moetune launch --nproc N --exec PROGRAM [options] -- <program arguments>\n"
              "Output lines are prefixed \"[rank r] \"; SIGINT/SIGTERM are forwarded once to every rank; when a rank\n"
              "fails the others are stopped and moetune launch exits with its status. Several nodes: see\n"
              "docs/PARALLEL.md (torchrun, srun, mpirun).",
              {
                  {"nproc", "N", "", "processes to start (required; usually the GPUs of this machine)"},
                  {"master-port", "P", "", "MASTER_PORT of the run (default: a free port)"},
                  {"exec", "PROGRAM", "", "run PROGRAM (a path, or a name in PATH) instead of moetune"},
                  {"kill-timeout", "S", "30", "after a rank fails: seconds between SIGTERM and SIGKILL to the others"},
              });
}

// This binary, for the children (argv[0] may be a bare name found in PATH, or relative to a directory since left).
std::string own_executable() {
  char path[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", path, sizeof path - 1);
  if (n <= 0) fail("cannot find the moetune executable (/proc/self/exe): ", std::strerror(errno));
  return std::string(path, static_cast<size_t>(n));
}

}  // namespace

int launch_command(int argc, char** argv) {
  Args args = launch_args();
  int split = argc;
  for (int i = 0; i < argc; ++i)
    if (std::strcmp(argv[i], "--") == 0) {
      split = i;
      break;
    }
  if (!args.parse(split, argv)) return 0;
  const std::vector<std::string> rest(argv + std::min(split + 1, argc), argv + argc);
  if (!args.given("nproc")) throw UsageError{"moetune launch: --nproc is required"};
  const long nproc = args.integer("nproc");
  if (nproc < 1 || nproc > 1024) throw UsageError{str("moetune launch: --nproc must be in 1..1024, got ", nproc)};
  if (split == argc || (rest.empty() && !args.given("exec")))
    throw UsageError{"moetune launch: nothing to launch; put the command after --, e.g. moetune launch --nproc 2 -- "
                     "train --model DIR ..."};

  parallel::LocalLaunchOptions options;
  options.nproc = static_cast<int>(nproc);
  options.program = args.given("exec") ? args.text("exec") : own_executable();
  options.args = rest;
  if (args.given("master-port")) {
    const long port = args.integer("master-port");
    if (port < 1 || port > 65535) throw UsageError{str("moetune launch: --master-port must be in 1..65535, got ", port)};
    options.master_port = static_cast<int>(port);
  }
  options.kill_timeout_s = args.number("kill-timeout");
  if (options.kill_timeout_s < 0) throw UsageError{"moetune launch: --kill-timeout must be >= 0"};
  return parallel::launch_local(options);
}

}  // namespace moetune::cli
