// Why: `moetune launch` is judged from outside, on the built binary, with small shell programs as ranks (--exec
// /bin/sh): each rank must see torchrun's variables with its own rank and one shared port; output must come back as
// whole lines prefixed with the rank; a failing rank must stop the others (SIGKILL when they ignore SIGTERM) and give
// its status as the launcher's, named in the last line; SIGTERM to the launcher must reach every rank exactly once; and
// a killed launcher must not leave its ranks running. The line splitter is tested directly on awkward chunkings.
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "../test_util.h"
#include "parallel/local_launcher.h"

namespace moetune::parallel {
namespace {

using test_util::CommandResult;
using test_util::lines_of;
using test_util::TempFolder;

using test_util::describe;
using test_util::quote;

// `moetune launch <options> --exec /bin/sh -- -c <script>`, in the temporary folder.
CommandResult launch_sh(const TempFolder& temp, const std::string& options, const std::string& script,
                        const std::string& env = "") {
  return test_util::run_command("cd " + quote(temp.path()) + " && " + env + " " + quote(test_util::cli_path()) + " launch " +
                                    options + " --exec /bin/sh -- -c " + quote(script),
                                temp.path());
}

CommandResult moetune(const TempFolder& temp, const std::string& arguments) {
  return test_util::run_command("cd " + quote(temp.path()) + " && " + quote(test_util::cli_path()) + " " + arguments, temp.path());
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

TEST(Launch, EveryRankGetsTorchrunVariables) {
  TempFolder temp;
  // A RANK in the launcher's own environment must not leak through.
  const CommandResult result = launch_sh(
      temp, "--nproc 3",
      "echo \"$RANK $WORLD_SIZE $LOCAL_RANK $LOCAL_WORLD_SIZE $MASTER_ADDR $MASTER_PORT\"; echo \"to stderr $RANK\" >&2",
      "RANK=99 WORLD_SIZE=99");
  ASSERT_EQ(result.status, 0) << describe(result);
  const std::vector<std::string> out = lines_of(result.out);
  ASSERT_EQ(out.size(), 3u) << describe(result);
  std::set<std::string> ports;
  std::set<int> ranks;
  const std::regex line(R"(\[rank (\d)\] (\d) 3 (\d) 3 127\.0\.0\.1 (\d+))");
  for (const std::string& text : out) {
    std::smatch match;
    ASSERT_TRUE(std::regex_match(text, match, line)) << text;
    EXPECT_EQ(match[1], match[2]);
    EXPECT_EQ(match[1], match[3]);
    ranks.insert(std::stoi(match[1]));
    ports.insert(match[4]);
  }
  EXPECT_EQ(ranks, (std::set<int>{0, 1, 2}));
  EXPECT_EQ(ports.size(), 1u) << "every rank must see the same MASTER_PORT";
  for (int r = 0; r < 3; ++r)
    EXPECT_NE(result.err.find("[rank " + std::to_string(r) + "] to stderr " + std::to_string(r) + "\n"), std::string::npos)
        << describe(result);
}

// The ranks share a process group of their own (not the launcher's), so a terminal's Ctrl-C reaches only the launcher,
// which forwards it once.
TEST(Launch, RanksRunInTheirOwnProcessGroup) {
  TempFolder temp;
  const CommandResult result = launch_sh(
      temp, "--nproc 2",
      "mine=$(cut -d' ' -f5 /proc/$$/stat); parent=$(cut -d' ' -f5 /proc/$PPID/stat); "
      "[ \"$mine\" != \"$parent\" ] && echo \"own group $mine\"");
  ASSERT_EQ(result.status, 0) << describe(result);
  const std::regex line(R"(\[rank (\d)\] own group (\d+))");
  std::set<std::string> groups;
  for (const std::string& text : lines_of(result.out)) {
    std::smatch match;
    ASSERT_TRUE(std::regex_match(text, match, line)) << describe(result);
    groups.insert(match[2]);
  }
  EXPECT_EQ(lines_of(result.out).size(), 2u) << describe(result);
  EXPECT_EQ(groups.size(), 1u) << "both ranks in one group\n" << describe(result);
}

TEST(Launch, MasterPortOption) {
  TempFolder temp;
  const CommandResult result = launch_sh(temp, "--nproc 2 --master-port 29876", "echo port=$MASTER_PORT");
  ASSERT_EQ(result.status, 0) << describe(result);
  EXPECT_NE(result.out.find("[rank 0] port=29876\n"), std::string::npos) << describe(result);
  EXPECT_NE(result.out.find("[rank 1] port=29876\n"), std::string::npos) << describe(result);
}

TEST(Launch, LinesStayWholeAndUnterminatedOutputIsEnded) {
  TempFolder temp;
  // Each rank writes a line in pieces (with pauses), then text without a final newline.
  const CommandResult result =
      launch_sh(temp, "--nproc 4", "printf 'part-a '; sleep 0.05; printf 'part-b\\n'; printf \"tail of $RANK\"");
  ASSERT_EQ(result.status, 0) << describe(result);
  for (int r = 0; r < 4; ++r) {
    const std::string prefix = "[rank " + std::to_string(r) + "] ";
    EXPECT_NE(result.out.find(prefix + "part-a part-b\n"), std::string::npos) << describe(result);
    EXPECT_NE(result.out.find(prefix + "tail of " + std::to_string(r) + "\n"), std::string::npos) << describe(result);
  }
  for (const std::string& text : lines_of(result.out)) EXPECT_EQ(text.rfind("[rank ", 0), 0u) << text;
}

TEST(Launch, RunsMoetuneItself) {
  TempFolder temp;
  const CommandResult result = moetune(temp, "launch --nproc 2 -- --help");
  ASSERT_EQ(result.status, 0) << describe(result);
  EXPECT_NE(result.out.find("[rank 0] usage: moetune <command>"), std::string::npos) << describe(result);
  EXPECT_NE(result.out.find("[rank 1] usage: moetune <command>"), std::string::npos) << describe(result);
  // A child's usage error (exit 2) is the launcher's status. (Which rank speaks first is a race: the first to fail
  // stops the other, perhaps before it printed anything.)
  const CommandResult bad = moetune(temp, "launch --nproc 2 -- no-such-command");
  EXPECT_EQ(bad.status, 2) << describe(bad);
  EXPECT_TRUE(std::regex_search(bad.err, std::regex(R"(\[rank [01]\] moetune: unknown command "no-such-command")")))
      << describe(bad);
  EXPECT_TRUE(std::regex_search(bad.err, std::regex(R"(error: rank [01] of 2 exited with status 2)"))) << describe(bad);
}

TEST(Launch, FailingRankStopsTheOthers) {
  TempFolder temp;
  const auto start = std::chrono::steady_clock::now();
  const CommandResult result =
      launch_sh(temp, "--nproc 3", "if [ $RANK = 1 ]; then sleep 0.2; echo failing; exit 3; fi; sleep 60; echo survived");
  EXPECT_LT(seconds_since(start), 30.0) << "the other ranks were not stopped";
  EXPECT_EQ(result.status, 3) << describe(result);
  EXPECT_EQ(result.out.find("survived"), std::string::npos) << describe(result);
  EXPECT_NE(result.out.find("[rank 1] failing"), std::string::npos) << describe(result);
  EXPECT_NE(result.err.find("rank 1 (pid "), std::string::npos) << describe(result);
  EXPECT_NE(result.err.find("exited with status 3; stopping the other 2 ranks"), std::string::npos) << describe(result);
  const std::vector<std::string> err = lines_of(result.err);
  ASSERT_FALSE(err.empty());
  EXPECT_EQ(err.back(), "moetune launch: error: rank 1 of 3 exited with status 3") << describe(result);
}

TEST(Launch, KilledRankAndStubbornRanks) {
  TempFolder temp;
  // Rank 0 dies of SIGKILL; the others ignore SIGTERM, so they need the SIGKILL that follows --kill-timeout.
  const auto start = std::chrono::steady_clock::now();
  const CommandResult result = launch_sh(temp, "--nproc 3 --kill-timeout 1",
                                         "trap '' TERM; if [ $RANK = 0 ]; then sleep 0.2; kill -9 $$; fi; sleep 60");
  EXPECT_LT(seconds_since(start), 30.0) << "the stubborn ranks were not killed";
  EXPECT_EQ(result.status, 128 + 9) << describe(result);
  EXPECT_NE(result.err.find("rank 0 (pid "), std::string::npos) << describe(result);
  EXPECT_NE(result.err.find("was killed by signal 9"), std::string::npos) << describe(result);
  EXPECT_NE(result.err.find("sending SIGKILL"), std::string::npos) << describe(result);
}

// The launcher is started in the background; once every rank is ready, it gets SIGTERM; each rank counts the SIGTERMs
// it sees until told to stop (half a second after each has seen one, time enough for a second one to show up).
TEST(Launch, ForwardsSigtermOnce) {
  TempFolder temp;
  const std::string rank_script =
      "n=0; trap 'n=$((n+1)); echo \"caught TERM $n\"; touch caught.$RANK' TERM; touch ready.$RANK; "
      "while [ ! -e stop ]; do sleep 0.05; done; echo \"done after $n\"";
  const std::string driver =
      "cd " + quote(temp.path()) + " && (" + quote(test_util::cli_path()) + " launch --nproc 2 --exec /bin/sh -- -c " +
      quote(rank_script) +
      " & pid=$!; i=0; while [ ! -e ready.0 ] || [ ! -e ready.1 ]; do sleep 0.05; i=$((i+1)); [ $i -gt 400 ] && break; done; "
      "kill -TERM $pid; i=0; while [ ! -e caught.0 ] || [ ! -e caught.1 ]; do sleep 0.05; i=$((i+1)); "
      "[ $i -gt 400 ] && break; done; sleep 0.5; touch stop; wait $pid)";
  const CommandResult result = test_util::run_command(driver, temp.path());
  EXPECT_EQ(result.status, 0) << describe(result);
  EXPECT_NE(result.err.find("moetune launch: forwarding SIGTERM to 2 ranks"), std::string::npos) << describe(result);
  for (int r = 0; r < 2; ++r) {
    const std::string prefix = "[rank " + std::to_string(r) + "] ";
    EXPECT_NE(result.out.find(prefix + "caught TERM 1\n"), std::string::npos) << describe(result);
    EXPECT_NE(result.out.find(prefix + "done after 1\n"), std::string::npos) << describe(result);
  }
}

TEST(Launch, RanksDieWithTheLauncher) {
  TempFolder temp;
  // Ranks note a SIGTERM in a file (their stdout pipe is gone with the launcher).
  const std::string rank_script =
      "trap 'touch died.$RANK; exit 0' TERM; touch ready.$RANK; while :; do sleep 0.05; done";
  const std::string driver =
      "cd " + quote(temp.path()) + " && (" + quote(test_util::cli_path()) + " launch --nproc 2 --exec /bin/sh -- -c " +
      quote(rank_script) +
      " & pid=$!; i=0; while [ ! -e ready.0 ] || [ ! -e ready.1 ]; do sleep 0.05; i=$((i+1)); [ $i -gt 400 ] && break; done; "
      "kill -KILL $pid; wait $pid; "
      "i=0; while [ ! -e died.0 ] || [ ! -e died.1 ]; do sleep 0.05; i=$((i+1)); [ $i -gt 200 ] && exit 1; done; exit 0)";
  const CommandResult result = test_util::run_command(driver, temp.path());
  EXPECT_EQ(result.status, 0) << "ranks outlived a killed launcher\n" << describe(result);
}

TEST(Launch, UsageAndStartErrors) {
  TempFolder temp;
  EXPECT_EQ(moetune(temp, "launch -- train").status, 2);  // no --nproc
  EXPECT_EQ(moetune(temp, "launch --nproc 0 -- train").status, 2);
  EXPECT_EQ(moetune(temp, "launch --nproc two -- train").status, 2);
  const CommandResult nothing = moetune(temp, "launch --nproc 2");
  EXPECT_EQ(nothing.status, 2) << describe(nothing);
  EXPECT_NE(nothing.err.find("nothing to launch"), std::string::npos) << describe(nothing);
  EXPECT_EQ(moetune(temp, "launch --nproc 2 --").status, 2);
  EXPECT_EQ(moetune(temp, "launch --nproc 2 --bogus -- train").status, 2);

  const CommandResult missing = moetune(temp, "launch --nproc 2 --exec /no/such/program -- x");
  EXPECT_EQ(missing.status, 1) << describe(missing);
  EXPECT_NE(lines_of(missing.err).back().find("/no/such/program"), std::string::npos) << describe(missing);
  const CommandResult not_in_path = moetune(temp, "launch --nproc 2 --exec no-such-program-in-path -- x");
  EXPECT_EQ(not_in_path.status, 1) << describe(not_in_path);
  EXPECT_NE(lines_of(not_in_path.err).back().find("no-such-program-in-path"), std::string::npos) << describe(not_in_path);

  const CommandResult help = moetune(temp, "launch --help");
  EXPECT_EQ(help.status, 0);
  for (const char* option : {"--nproc ", "--master-port ", "--exec ", "--kill-timeout "})
    EXPECT_NE(help.out.find(option), std::string::npos) << help.out;
}

// --- the line splitter ------------------------------------------------------------------------------------------------

TEST(LinePrefixer, SplitsAndPrefixes) {
  LinePrefixer p("[r] ");
  EXPECT_EQ(p.feed("ab"), "");
  EXPECT_EQ(p.feed("c\nde"), "[r] abc\n");
  EXPECT_EQ(p.feed("\n\nx\ny\n"), "[r] de\n[r] \n[r] x\n[r] y\n");
  EXPECT_EQ(p.finish(), "");
  EXPECT_EQ(p.feed("no end"), "");
  EXPECT_EQ(p.finish(), "[r] no end\n");
}

TEST(LinePrefixer, CarriageReturns) {
  LinePrefixer p("[r] ");
  // Progress rewritten with '\r': each state prefixed; "\r\n" is one line end, even split across chunks.
  EXPECT_EQ(p.feed("10%\r20%\r"), "[r] 10%\r");
  EXPECT_EQ(p.feed("30%\n"), "[r] 20%\r[r] 30%\n");
  EXPECT_EQ(p.feed("dos\r"), "");
  EXPECT_EQ(p.feed("\nnext\r\n"), "[r] dos\r\n[r] next\r\n");
  EXPECT_EQ(p.feed("last\r"), "");
  EXPECT_EQ(p.finish(), "[r] last\r");
}

TEST(LinePrefixer, VeryLongLinesPassThrough) {
  LinePrefixer p("[r] ", 8);
  EXPECT_EQ(p.feed("0123456789"), "[r] 0123456789");
  EXPECT_EQ(p.feed("ab\ncd\n"), "ab\n[r] cd\n");
  EXPECT_EQ(p.feed("0123456789"), "[r] 0123456789");
  EXPECT_EQ(p.finish(), "\n");
}

TEST(LocalLaunch, Environment) {
  EXPECT_EQ(local_rank_environment(2, 4, "127.0.0.1", 1234),
            (std::vector<std::string>{"RANK=2", "WORLD_SIZE=4", "LOCAL_RANK=2", "LOCAL_WORLD_SIZE=4",
                                      "MASTER_ADDR=127.0.0.1", "MASTER_PORT=1234"}));
  const int port = free_local_port();
  EXPECT_GT(port, 0);
  EXPECT_LT(port, 65536);
}

}  // namespace
}  // namespace moetune::parallel
