// Why: `moetune launch --nproc N -- train ...` starts the N processes of a one-node multi-GPU run itself, so a user
// needs neither torchrun nor Python. Each process gets torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK,
// LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), so parallel/topology.h reads one launcher's output exactly like the other's.
//
// Behaviour, chosen for a training run:
// - Output: each child's stdout and stderr come through pipes and leave as whole lines prefixed "[rank r] " (also
//   after a '\r', so progress lines stay readable), on the launcher's stdout and stderr respectively; lines of
//   different ranks never interleave mid-line.
// - Signals: the children run in a process group of their own, so a Ctrl-C in the terminal reaches only the launcher,
//   which forwards SIGINT / SIGTERM / SIGHUP to the group exactly once per signal it receives (the trainer writes a
//   checkpoint on the first and aborts on the second, so a double delivery would lose the checkpoint). After such a
//   signal, ranks are left to finish on their own (their exit statuses are expected to be non-zero).
// - Failure: when a rank exits non-zero or is killed while no signal was forwarded, the launcher names it and its
//   status, sends SIGTERM to the others, SIGKILL after kill_timeout_s, and returns that rank's status (its exit code,
//   or 128 + the signal). If the launcher itself dies, its children get SIGTERM (PR_SET_PDEATHSIG).
// - stdin of the children is /dev/null.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace moetune::parallel {

struct LocalLaunchOptions {
  int nproc = 1;
  std::string program;            // a path, or a name looked up in PATH
  std::vector<std::string> args;  // argv[1...] of every child
  std::string master_addr = "127.0.0.1";
  int master_port = 0;            // 0: a free port of this machine
  double kill_timeout_s = 30.0;   // after a failure: SIGTERM, then SIGKILL this much later
  int out_fd = 1, err_fd = 2;     // where the prefixed output goes
};

// Runs the children to the end. Returns 0 when every rank exited 0, else the status of the first rank that failed
// (or, after a forwarded signal, of the lowest rank with a non-zero status). Throws moetune::Error when a child cannot
// be started (program not found, not executable); children already started are stopped first.
int launch_local(const LocalLaunchOptions& options);

// The variables rank `rank` of `nproc` gets: "RANK=r", "WORLD_SIZE=n", "LOCAL_RANK=r", "LOCAL_WORLD_SIZE=n",
// "MASTER_ADDR=addr", "MASTER_PORT=port".
std::vector<std::string> local_rank_environment(int rank, int nproc, const std::string& master_addr, int master_port);

// A TCP port of 127.0.0.1 that was free a moment ago (bound to port 0 and released).
int free_local_port();

// Splits a byte stream into lines and prefixes each. feed() returns the text ready to print: every segment ended by
// '\n' or by a '\r' not followed by '\n' (a "\r\n" stays one line end), each preceded by the prefix when it starts a
// line. A segment longer than max_pending bytes without an end is passed on as it is (the rest of its line then gets
// no prefix). finish() returns what is left, ended with '\n' if it was not.
class LinePrefixer {
 public:
  explicit LinePrefixer(std::string prefix, size_t max_pending = 65536)
      : prefix_(std::move(prefix)), max_pending_(max_pending) {}
  std::string feed(std::string_view chunk);
  std::string finish();

 private:
  std::string prefix_;
  size_t max_pending_;
  std::string pending_;
  bool at_line_start_ = true;
};

}  // namespace moetune::parallel
