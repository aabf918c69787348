// Why: see local_launcher.h. fork + execve rather than posix_spawn because the child needs PR_SET_PDEATHSIG; everything
// the child touches between fork and exec (argv, envp, the program path) is prepared before the fork, and the child calls
// only async-signal-safe functions. Signals reach the poll loop through a self-pipe.
#include "parallel/local_launcher.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <iterator>
#include <memory>
#include <optional>

#include "core/error.h"

extern char** environ;

namespace moetune::parallel {

// --- line prefixing ---------------------------------------------------------------------------------------------------

std::string LinePrefixer::feed(std::string_view chunk) {
  pending_.append(chunk);
  std::string out;
  size_t begin = 0;
  for (size_t i = 0; i < pending_.size(); ++i) {
    const char c = pending_[i];
    if (c != '\n' && c != '\r') continue;
    if (c == '\r') {
      if (i + 1 == pending_.size()) break;  // a '\n' may follow in the next chunk
      if (pending_[i + 1] == '\n') ++i;     // "\r\n": one line end
    }
    if (at_line_start_) out += prefix_;
    out.append(pending_, begin, i + 1 - begin);
    at_line_start_ = true;
    begin = i + 1;
  }
  pending_.erase(0, begin);
  if (pending_.size() > max_pending_) {
    if (at_line_start_) out += prefix_;
    out += pending_;
    pending_.clear();
    at_line_start_ = false;
  }
  return out;
}

std::string LinePrefixer::finish() {
  std::string out;
  if (!pending_.empty()) {
    if (at_line_start_) out += prefix_;
    out += pending_;
    pending_.clear();
    at_line_start_ = false;
  }
  if (!at_line_start_ && (out.empty() || (out.back() != '\n' && out.back() != '\r'))) out += '\n';
  at_line_start_ = true;
  return out;
}

// --- helpers ----------------------------------------------------------------------------------------------------------

std::vector<std::string> local_rank_environment(int rank, int nproc, const std::string& master_addr, int master_port) {
  return {"RANK=" + std::to_string(rank),
          "WORLD_SIZE=" + std::to_string(nproc),
          "LOCAL_RANK=" + std::to_string(rank),
          "LOCAL_WORLD_SIZE=" + std::to_string(nproc),
          "MASTER_ADDR=" + master_addr,
          "MASTER_PORT=" + std::to_string(master_port)};
}

int free_local_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fail("cannot open a socket to find a free port: ", std::strerror(errno));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof address;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0;
  const int error = errno;
  ::close(fd);
  if (!ok) fail("cannot find a free port on 127.0.0.1: ", std::strerror(error));
  return ntohs(address.sin_port);
}

namespace {

using Clock = std::chrono::steady_clock;

void write_all(int fd, const std::string& text) {
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // the reader went away: the output is lost, the run goes on
    done += static_cast<size_t>(n);
  }
}

// The program's path: as given when it holds a '/', else the first executable match in PATH.
std::string resolve_program(const std::string& program) {
  if (program.empty()) fail("no program to run");
  if (program.find('/') != std::string::npos) return program;
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
  size_t begin = 0;
  while (begin <= dirs.size()) {
    size_t end = dirs.find(':', begin);
    if (end == std::string::npos) end = dirs.size();
    const std::string dir = end > begin ? dirs.substr(begin, end - begin) : ".";
    const std::string candidate = dir + "/" + program;
    struct stat info {};
    if (::stat(candidate.c_str(), &info) == 0 && S_ISREG(info.st_mode) && ::access(candidate.c_str(), X_OK) == 0)
      return candidate;
    begin = end + 1;
  }
  fail("program \"", program, "\" not found in PATH");
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return str("exited with status ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    const char* name = ::strsignal(sig);
    return str("was killed by signal ", sig, " (", name ? name : "?", ")");
  }
  return str("ended with wait status ", status);
}

int exit_code_of(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

const char* signal_name(int sig) {
  switch (sig) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    case SIGHUP: return "SIGHUP";
    default: return "a signal";
  }
}

// --- the self-pipe: the handlers write the signal number, the poll loop reads it -------------------------------------

int g_signal_pipe_write = -1;

void on_signal(int sig) {
  const int saved = errno;
  const unsigned char byte = static_cast<unsigned char>(sig);
  [[maybe_unused]] const ssize_t n = ::write(g_signal_pipe_write, &byte, 1);
  errno = saved;
}

constexpr int kForwarded[] = {SIGINT, SIGTERM, SIGHUP};

// Installs the handlers for the launcher's lifetime and restores the previous ones after.
class SignalRouting {
 public:
  SignalRouting() {
    if (::pipe2(fds_, O_CLOEXEC | O_NONBLOCK) != 0) fail("cannot create a pipe: ", std::strerror(errno));
    g_signal_pipe_write = fds_[1];
    struct sigaction action {};
    action.sa_handler = on_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0;
    for (size_t i = 0; i < std::size(kForwarded); ++i) sigaction(kForwarded[i], &action, &previous_[i]);
    action.sa_flags = SA_NOCLDSTOP;
    sigaction(SIGCHLD, &action, &previous_chld_);
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    sigaction(SIGPIPE, &ignore, &previous_pipe_);
  }
  ~SignalRouting() {
    for (size_t i = 0; i < std::size(kForwarded); ++i) sigaction(kForwarded[i], &previous_[i], nullptr);
    sigaction(SIGCHLD, &previous_chld_, nullptr);
    sigaction(SIGPIPE, &previous_pipe_, nullptr);
    g_signal_pipe_write = -1;
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  SignalRouting(const SignalRouting&) = delete;
  SignalRouting& operator=(const SignalRouting&) = delete;
  int read_fd() const { return fds_[0]; }

 private:
  int fds_[2] = {-1, -1};
  struct sigaction previous_[std::size(kForwarded)] {};
  struct sigaction previous_chld_ {};
  struct sigaction previous_pipe_ {};
};

// Blocks the forwarded signals and SIGCHLD while children are forked (so no handler runs in a child before it resets
// them); unblocked when it goes out of scope.
class BlockSignals {
 public:
  BlockSignals() {
    sigset_t set;
    sigemptyset(&set);
    for (const int sig : kForwarded) sigaddset(&set, sig);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, &previous_);
  }
  ~BlockSignals() { sigprocmask(SIG_SETMASK, &previous_, nullptr); }
  BlockSignals(const BlockSignals&) = delete;
  BlockSignals& operator=(const BlockSignals&) = delete;

 private:
  sigset_t previous_;
};

struct Child {
  int rank = 0;
  pid_t pid = -1;
  int out_fd = -1, err_fd = -1;
  std::unique_ptr<LinePrefixer> out_prefix, err_prefix;
  bool running = false;
  int status = 0;
};

// argv / envp as the C arrays execve takes, owning their strings.
struct CStrings {
  std::vector<std::string> strings;
  std::vector<char*> pointers;
  char** data() {
    pointers.clear();
    for (std::string& s : strings) pointers.push_back(s.data());
    pointers.push_back(nullptr);
    return pointers.data();
  }
};

CStrings child_environment(int rank, const LocalLaunchOptions& options, int port) {
  CStrings env;
  const std::vector<std::string> ours = local_rank_environment(rank, options.nproc, options.master_addr, port);
  for (char** e = environ; e && *e; ++e) {
    const std::string entry = *e;
    const std::string name = entry.substr(0, entry.find('='));
    const bool overridden = std::any_of(ours.begin(), ours.end(), [&](const std::string& o) {
      return o.compare(0, name.size() + 1, name + "=") == 0;
    });
    if (!overridden) env.strings.push_back(entry);
  }
  env.strings.insert(env.strings.end(), ours.begin(), ours.end());
  return env;
}

// After fork, in the child: only async-signal-safe calls. Reports an exec failure's errno on `report_fd`.
[[noreturn]] void exec_child(pid_t parent, pid_t group, int stdin_fd, int out_fd, int err_fd, int report_fd,
                             const char* path, char** argv, char** envp) {
  ::setpgid(0, group);
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (::getppid() != parent) ::_exit(127);  // the launcher died before prctl
  ::dup2(stdin_fd, 0);
  ::dup2(out_fd, 1);
  ::dup2(err_fd, 2);
  struct sigaction action {};
  action.sa_handler = SIG_DFL;
  sigemptyset(&action.sa_mask);
  for (const int sig : kForwarded) ::sigaction(sig, &action, nullptr);
  ::sigaction(SIGCHLD, &action, nullptr);
  ::sigaction(SIGPIPE, &action, nullptr);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::execve(path, argv, envp);
  const int error = errno;
  [[maybe_unused]] const ssize_t n = ::write(report_fd, &error, sizeof error);
  ::_exit(127);
}

class Launcher {
 public:
  explicit Launcher(const LocalLaunchOptions& options) : options_(options) {}

  int run() {
    const std::string path = resolve_program(options_.program);
    const int port = options_.master_port > 0 ? options_.master_port : free_local_port();
    SignalRouting signals;  // before the first fork: a Ctrl-C from now on is forwarded, never fatal to the launcher
    start_all(path, port);
    loop(signals);
    return result();
  }

 private:
  void note(const std::string& text) { write_all(options_.err_fd, "moetune launch: " + text + "\n"); }

  void start_all(const std::string& path, int port) {
    CStrings argv;
    argv.strings.push_back(options_.program);
    argv.strings.insert(argv.strings.end(), options_.args.begin(), options_.args.end());
    const int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (devnull < 0) fail("cannot open /dev/null: ", std::strerror(errno));
    std::optional<std::string> error;
    {
      BlockSignals blocked;
      for (int rank = 0; rank < options_.nproc && !error; ++rank) error = start(rank, path, argv, port, devnull);
    }
    ::close(devnull);
    if (error) {
      if (group_ > 0) ::kill(-group_, SIGKILL);
      for (Child& child : children_) {
        if (child.running)
          while (::waitpid(child.pid, &child.status, 0) < 0 && errno == EINTR) {
          }
        child.running = false;
        if (child.out_fd >= 0) ::close(child.out_fd);
        if (child.err_fd >= 0) ::close(child.err_fd);
      }
      fail(*error);
    }
  }

  // Starts one rank; returns an error text instead when it cannot.
  std::optional<std::string> start(int rank, const std::string& path, CStrings& argv, int port, int devnull) {
    CStrings env = child_environment(rank, options_, port);
    int out[2], err[2], report[2];
    if (::pipe2(out, O_CLOEXEC) != 0) return str("cannot create a pipe: ", std::strerror(errno));
    if (::pipe2(err, O_CLOEXEC) != 0) {
      ::close(out[0]), ::close(out[1]);
      return str("cannot create a pipe: ", std::strerror(errno));
    }
    if (::pipe2(report, O_CLOEXEC) != 0) {
      ::close(out[0]), ::close(out[1]), ::close(err[0]), ::close(err[1]);
      return str("cannot create a pipe: ", std::strerror(errno));
    }
    char** argv_data = argv.data();
    char** env_data = env.data();
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid == 0)
      exec_child(parent, group_ > 0 ? group_ : 0, devnull, out[1], err[1], report[1], path.c_str(), argv_data, env_data);
    const int fork_error = errno;
    ::close(out[1]);
    ::close(err[1]);
    ::close(report[1]);
    if (pid < 0) {
      ::close(out[0]), ::close(err[0]), ::close(report[0]);
      return str("cannot start rank ", rank, ": ", std::strerror(fork_error));
    }
    if (group_ <= 0) group_ = pid;
    ::setpgid(pid, group_);  // also here, so the group exists before the next fork (fails harmlessly after exec)
    Child child;
    child.rank = rank;
    child.pid = pid;
    child.out_fd = out[0];
    child.err_fd = err[0];
    child.out_prefix = std::make_unique<LinePrefixer>("[rank " + std::to_string(rank) + "] ");
    child.err_prefix = std::make_unique<LinePrefixer>("[rank " + std::to_string(rank) + "] ");
    child.running = true;
    children_.push_back(std::move(child));
    int exec_error = 0;
    ssize_t n;
    do n = ::read(report[0], &exec_error, sizeof exec_error);
    while (n < 0 && errno == EINTR);
    ::close(report[0]);
    if (n == static_cast<ssize_t>(sizeof exec_error))
      return str("cannot run \"", path, "\" (rank ", rank, "): ", std::strerror(exec_error));
    return std::nullopt;
  }

  void forward(int sig) {
    int running = 0;
    for (const Child& child : children_) running += child.running;
    if (running == 0) return;
    interrupted_ = true;
    note(str("forwarding ", signal_name(sig), " to ", running, running == 1 ? " rank" : " ranks"));
    ::kill(-group_, sig);
  }

  void drain(Child& child, int& fd, LinePrefixer& prefix, int out) {
    char buffer[65536];
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
    if (n > 0) {
      write_all(out, prefix.feed(std::string_view(buffer, static_cast<size_t>(n))));
      return;
    }
    write_all(out, prefix.finish());
    ::close(fd);
    fd = -1;
  }

  void reap() {
    for (Child& child : children_) {
      if (!child.running) continue;
      pid_t done;
      do done = ::waitpid(child.pid, &child.status, WNOHANG);
      while (done < 0 && errno == EINTR);
      if (done != child.pid) continue;
      child.running = false;
      const bool failed = !(WIFEXITED(child.status) && WEXITSTATUS(child.status) == 0);
      if (failed && !stopping_ && !interrupted_) {
        first_failure_ = child.rank;
        stopping_ = true;
        int others = 0;
        for (const Child& c : children_) others += c.running;
        const std::string stopping = others == 0   ? std::string()
                                     : others == 1 ? std::string("; stopping the other rank")
                                                   : str("; stopping the other ", others, " ranks");
        note(str("rank ", child.rank, " (pid ", child.pid, ") ", describe_status(child.status), stopping));
        if (others > 0) {
          ::kill(-group_, SIGTERM);
          kill_deadline_ = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                              std::chrono::duration<double>(std::max(0.0, options_.kill_timeout_s)));
        }
      }
    }
  }

  bool any_running() const {
    return std::any_of(children_.begin(), children_.end(), [](const Child& c) { return c.running; });
  }

  void loop(const SignalRouting& signals) {
    std::optional<Clock::time_point> drain_deadline;  // once every child is reaped: how long to wait for their pipes
    for (;;) {
      reap();
      const bool running = any_running();
      if (!running && !drain_deadline) drain_deadline = Clock::now() + std::chrono::seconds(2);
      std::vector<pollfd> fds = {{signals.read_fd(), POLLIN, 0}};
      std::vector<std::pair<Child*, bool>> owners;  // (child, is stdout)
      for (Child& child : children_) {
        if (child.out_fd >= 0) fds.push_back({child.out_fd, POLLIN, 0}), owners.push_back({&child, true});
        if (child.err_fd >= 0) fds.push_back({child.err_fd, POLLIN, 0}), owners.push_back({&child, false});
      }
      if (!running && owners.empty()) return;
      if (drain_deadline && Clock::now() >= *drain_deadline) {
        // Every rank has ended, but something they started still holds their output open: stop listening.
        for (auto& [child, is_out] : owners) {
          int& fd = is_out ? child->out_fd : child->err_fd;
          write_all(is_out ? options_.out_fd : options_.err_fd, (is_out ? child->out_prefix : child->err_prefix)->finish());
          ::close(fd);
          fd = -1;
        }
        return;
      }
      if (kill_deadline_ && running && Clock::now() >= *kill_deadline_) {
        note(str("ranks still running ", options_.kill_timeout_s, " s after SIGTERM; sending SIGKILL"));
        ::kill(-group_, SIGKILL);
        kill_deadline_.reset();
      }
      int timeout_ms = 1000;
      const auto until = [&](Clock::time_point when) {
        const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(when - Clock::now()).count();
        timeout_ms = std::min<int>(timeout_ms, static_cast<int>(std::max<long long>(ms, 0) + 1));
      };
      if (kill_deadline_) until(*kill_deadline_);
      if (drain_deadline) until(*drain_deadline);
      const int ready = ::poll(fds.data(), fds.size(), timeout_ms);
      if (ready < 0) {
        if (errno == EINTR) continue;
        fail("poll failed: ", std::strerror(errno));
      }
      if (fds[0].revents & POLLIN) {
        unsigned char sigs[64];
        const ssize_t n = ::read(signals.read_fd(), sigs, sizeof sigs);
        for (ssize_t i = 0; i < n; ++i)
          if (sigs[i] != SIGCHLD) forward(sigs[i]);
      }
      for (size_t i = 1; i < fds.size(); ++i) {
        if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        auto& [child, is_out] = owners[i - 1];
        if (is_out) drain(*child, child->out_fd, *child->out_prefix, options_.out_fd);
        else drain(*child, child->err_fd, *child->err_prefix, options_.err_fd);
      }
    }
  }

  int result() {
    const Child* failed = nullptr;
    if (first_failure_ >= 0) failed = &children_[first_failure_];
    for (const Child& child : children_)
      if (!failed && exit_code_of(child.status) != 0) failed = &child;
    if (!failed) return 0;
    note(str("error: rank ", failed->rank, " of ", options_.nproc, " ", describe_status(failed->status)));
    return exit_code_of(failed->status);
  }

  const LocalLaunchOptions& options_;
  std::vector<Child> children_;
  pid_t group_ = -1;
  bool stopping_ = false, interrupted_ = false;
  int first_failure_ = -1;
  std::optional<Clock::time_point> kill_deadline_;
};

}  // namespace

int launch_local(const LocalLaunchOptions& options) {
  if (options.nproc < 1) fail("--nproc must be at least 1, got ", options.nproc);
  Launcher launcher(options);
  return launcher.run();
}

}  // namespace moetune::parallel
