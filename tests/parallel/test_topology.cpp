// Why: a rank that reads its identity wrong does not crash, it hangs in the first collective (or trains on the wrong
// experts). So each launcher's variables are fed in as a fixed environment, as that launcher really sets them, and the
// result is checked field by field; each inconsistency must be an error naming the variables; the Slurm hostlist
// parser is checked on the compressed forms Slurm writes; and the EP x DP layout is checked against its definition on
// every rank of several shapes (each rank in exactly one EP and one DP group, each expert held once per EP group).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "../test_util.h"
#include "parallel/topology.h"

namespace moetune::parallel {
namespace {

using test_util::error_of;
using Env = std::map<std::string, std::string>;

ProcessGroupInfo detect(const Env& env) { return detect_process_group(environment_from(env)); }
std::string detect_error(const Env& env) {
  return error_of([&] { detect(env); });
}

void expect_contains(const std::string& text, std::initializer_list<std::string> parts) {
  for (const std::string& part : parts) EXPECT_NE(text.find(part), std::string::npos) << "\"" << part << "\" not in: " << text;
}

void expect_group(const ProcessGroupInfo& g, int rank, int world, int local_rank, int local_world, const std::string& addr,
                  int port, const std::string& source) {
  EXPECT_EQ(g.rank, rank);
  EXPECT_EQ(g.world_size, world);
  EXPECT_EQ(g.local_rank, local_rank);
  EXPECT_EQ(g.local_world_size, local_world);
  EXPECT_EQ(g.master_addr, addr);
  EXPECT_EQ(g.master_port, port);
  EXPECT_EQ(g.source, source);
}

// --- torchrun ---------------------------------------------------------------------------------------------------------

const Env kTorchrun = {{"RANK", "5"},          {"WORLD_SIZE", "8"},         {"LOCAL_RANK", "1"},
                       {"LOCAL_WORLD_SIZE", "4"}, {"MASTER_ADDR", "10.1.2.3"}, {"MASTER_PORT", "29400"}};

Env with(Env env, const Env& changes) {
  for (const auto& [name, value] : changes) env[name] = value;
  return env;
}
Env without(Env env, std::initializer_list<std::string> names) {
  for (const std::string& name : names) env.erase(name);
  return env;
}

TEST(Topology, Torchrun) {
  const ProcessGroupInfo g = detect(kTorchrun);
  expect_group(g, 5, 8, 1, 4, "10.1.2.3", 29400, "torchrun");
  EXPECT_EQ(g.nodes(), 2);
  EXPECT_EQ(g.node_rank(), 1);
}

// Real torchrun keeps a TCPStore of its own on MASTER_PORT: the NCCL bootstrap must listen elsewhere.
TEST(Topology, TorchrunAgentStoreTakesTheMasterPort) {
  EXPECT_FALSE(detect(kTorchrun).master_port_taken);
  EXPECT_EQ(nccl_comm_id(detect(kTorchrun)), "10.1.2.3:29400");
  const ProcessGroupInfo g = detect(with(kTorchrun, {{"TORCHELASTIC_USE_AGENT_STORE", "True"}}));
  EXPECT_TRUE(g.master_port_taken);
  EXPECT_EQ(g.master_port, 29400);
  EXPECT_EQ(g.bootstrap_port(), 29401);
  EXPECT_EQ(nccl_comm_id(g), "10.1.2.3:29401");
  EXPECT_FALSE(detect(with(kTorchrun, {{"TORCHELASTIC_USE_AGENT_STORE", "False"}})).master_port_taken);
}

TEST(Topology, TorchrunMissingVariablesAreNamed) {
  const std::string error = detect_error(without(kTorchrun, {"LOCAL_WORLD_SIZE", "MASTER_PORT"}));
  EXPECT_EQ(error.rfind("torchrun environment: LOCAL_WORLD_SIZE, MASTER_PORT not set", 0), 0u) << error;
  expect_contains(detect_error(without(kTorchrun, {"RANK"})), {"RANK"});
  expect_contains(detect_error(Env{{"WORLD_SIZE", "2"}}), {"RANK", "LOCAL_RANK", "MASTER_ADDR"});
}

TEST(Topology, TorchrunInconsistentValues) {
  expect_contains(detect_error(with(kTorchrun, {{"RANK", "8"}})), {"RANK=8", "not below", "WORLD_SIZE=8"});
  expect_contains(detect_error(with(kTorchrun, {{"LOCAL_RANK", "4"}})), {"LOCAL_RANK=4", "LOCAL_WORLD_SIZE=4"});
  expect_contains(detect_error(with(kTorchrun, {{"RANK", "abc"}})), {"RANK=\"abc\"", "integer"});
  expect_contains(detect_error(with(kTorchrun, {{"RANK", "-1"}})), {"RANK=\"-1\""});
  expect_contains(detect_error(with(kTorchrun, {{"RANK", "3x"}})), {"RANK=\"3x\""});
  expect_contains(detect_error(with(kTorchrun, {{"WORLD_SIZE", "0"}, {"RANK", "0"}})), {"WORLD_SIZE=0"});
  expect_contains(detect_error(with(kTorchrun, {{"WORLD_SIZE", "6"}})), {"WORLD_SIZE=6", "multiple", "LOCAL_WORLD_SIZE=4"});
  // Rank 5 on a node of 4 must be local rank 1.
  expect_contains(detect_error(with(kTorchrun, {{"LOCAL_RANK", "2"}})), {"node by node", "RANK=5", "LOCAL_RANK=2"});
  expect_contains(detect_error(with(kTorchrun, {{"MASTER_PORT", "70000"}})), {"MASTER_PORT=\"70000\"", "port"});
  expect_contains(detect_error(with(kTorchrun, {{"MASTER_PORT", "0"}})), {"MASTER_PORT"});
  expect_contains(detect_error(with(kTorchrun, {{"MASTER_ADDR", ""}})), {"master address"});
}

// srun torchrun / mpirun torchrun: torchrun's variables describe the real world, the outer launcher's do not.
TEST(Topology, TorchrunWinsOverOuterLaunchers) {
  const Env env = with(kTorchrun, {{"SLURM_PROCID", "1"}, {"SLURM_NTASKS", "2"}, {"SLURM_LOCALID", "0"},
                                   {"SLURM_TASKS_PER_NODE", "1(x2)"}, {"OMPI_COMM_WORLD_RANK", "1"},
                                   {"OMPI_COMM_WORLD_SIZE", "2"}});
  expect_group(detect(env), 5, 8, 1, 4, "10.1.2.3", 29400, "torchrun");
}

// --- Slurm ------------------------------------------------------------------------------------------------------------

// What srun sets in a step of `sbatch --nodes 2 --ntasks-per-node 4` (the variables moetune reads, plus neighbours).
const Env kSrun = {{"SLURM_PROCID", "6"},
                   {"SLURM_LOCALID", "2"},
                   {"SLURM_NODEID", "1"},
                   {"SLURM_NTASKS", "8"},
                   {"SLURM_STEP_NUM_TASKS", "8"},
                   {"SLURM_TASKS_PER_NODE", "4(x2)"},
                   {"SLURM_STEP_TASKS_PER_NODE", "4(x2)"},
                   {"SLURM_JOB_NODELIST", "gpu-a[07-08]"},
                   {"SLURM_STEP_NODELIST", "gpu-a[07-08]"},
                   {"SLURM_NODELIST", "gpu-a[07-08]"},
                   {"SLURM_LAUNCH_NODE_IPADDR", "10.9.9.9"},
                   {"SLURM_JOB_ID", "123456"}};

TEST(Topology, SlurmStep) {
  // Rank 0 runs on the first node of the step; the port follows the job id so two jobs on one node do not collide.
  const ProcessGroupInfo g = detect(kSrun);
  expect_group(g, 6, 8, 2, 4, "gpu-a07", kDefaultMasterPort + 456, "slurm");
  EXPECT_EQ(g.node_rank(), 1);
}

TEST(Topology, SlurmMasterOverridesAndFallbacks) {
  expect_group(detect(with(kSrun, {{"MASTER_ADDR", "head"}, {"MASTER_PORT", "12345"}})), 6, 8, 2, 4, "head", 12345, "slurm");
  // Without a step nodelist: the job's.
  expect_group(detect(with(without(kSrun, {"SLURM_STEP_NODELIST"}), {{"SLURM_JOB_NODELIST", "n[3,5]"}})), 6, 8, 2, 4, "n3",
               kDefaultMasterPort + 456, "slurm");
  // Without any nodelist: the launch node's address.
  expect_group(detect(without(kSrun, {"SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST"})), 6, 8, 2, 4,
               "10.9.9.9", kDefaultMasterPort + 456, "slurm");
  // Without a job id: the default port.
  EXPECT_EQ(detect(without(kSrun, {"SLURM_JOB_ID"})).master_port, kDefaultMasterPort);
  expect_contains(detect_error(without(kSrun, {"SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST",
                                               "SLURM_LAUNCH_NODE_IPADDR"})),
                  {"slurm", "rank 0's host", "MASTER_ADDR"});
}

TEST(Topology, SlurmTasksPerNodeSources) {
  // The older form: only the job's variables and --ntasks-per-node.
  const Env job = {{"SLURM_PROCID", "3"}, {"SLURM_LOCALID", "1"}, {"SLURM_NTASKS", "4"}, {"SLURM_NTASKS_PER_NODE", "2"},
                   {"SLURM_NODELIST", "node[01-02]"}};
  expect_group(detect(job), 3, 4, 1, 2, "node01", kDefaultMasterPort, "slurm");
  // The step's counts win over the allocation's (srun -n 4 inside an allocation of 8 tasks).
  const Env step = with(kSrun, {{"SLURM_PROCID", "3"}, {"SLURM_LOCALID", "1"}, {"SLURM_STEP_NUM_TASKS", "4"},
                                {"SLURM_STEP_TASKS_PER_NODE", "2(x2)"}});
  expect_group(detect(step), 3, 4, 1, 2, "gpu-a07", kDefaultMasterPort + 456, "slurm");
}

TEST(Topology, SlurmInconsistencies) {
  expect_contains(detect_error(with(kSrun, {{"SLURM_STEP_TASKS_PER_NODE", "4,3"}, {"SLURM_STEP_NUM_TASKS", "7"}})),
                  {"SLURM_STEP_TASKS_PER_NODE=\"4,3\"", "different task counts"});
  expect_contains(detect_error(with(kSrun, {{"SLURM_STEP_TASKS_PER_NODE", "4(x3)"}})),
                  {"adds up to 12", "SLURM_STEP_NUM_TASKS=8"});
  expect_contains(detect_error(with(kSrun, {{"SLURM_STEP_TASKS_PER_NODE", "4(x"}})), {"SLURM_STEP_TASKS_PER_NODE", "4(x"});
  expect_contains(detect_error(without(kSrun, {"SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"})),
                  {"SLURM_TASKS_PER_NODE", "srun"});
  expect_contains(detect_error(without(kSrun, {"SLURM_LOCALID"})), {"SLURM_LOCALID", "not set"});
  expect_contains(detect_error(without(kSrun, {"SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"})), {"SLURM_NTASKS"});
  expect_contains(detect_error(with(kSrun, {{"SLURM_PROCID", "8"}})), {"SLURM_PROCID=8", "SLURM_STEP_NUM_TASKS=8"});
  // Cyclic distribution: rank 6 on local slot 0 of 4.
  expect_contains(detect_error(with(kSrun, {{"SLURM_LOCALID", "0"}})), {"node by node", "--distribution=block"});
  expect_contains(detect_error(with(kSrun, {{"SLURM_STEP_NODELIST", "gpu[1-"}})), {"SLURM_STEP_NODELIST", "gpu[1-"});
}

// --- OpenMPI ----------------------------------------------------------------------------------------------------------

const Env kMpirun = {{"OMPI_COMM_WORLD_RANK", "3"},       {"OMPI_COMM_WORLD_SIZE", "4"},
                     {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"},
                     {"MASTER_ADDR", "node01"},           {"MASTER_PORT", "23456"}};

TEST(Topology, OpenMpi) {
  expect_group(detect(kMpirun), 3, 4, 1, 2, "node01", 23456, "openmpi");
  expect_group(detect(without(kMpirun, {"MASTER_PORT"})), 3, 4, 1, 2, "node01", kDefaultMasterPort, "openmpi");
  // mpirun inside a Slurm allocation: the batch step's SLURM_PROCID is inherited and must not count.
  expect_group(detect(with(kMpirun, {{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "4"}})), 3, 4, 1, 2, "node01", 23456, "openmpi");
}

TEST(Topology, OpenMpiNeedsMasterAddr) {
  expect_contains(detect_error(without(kMpirun, {"MASTER_ADDR"})), {"openmpi", "MASTER_ADDR", "mpirun -x MASTER_ADDR"});
  // One process needs no rendezvous.
  const Env one = {{"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "1"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "0"},
                   {"OMPI_COMM_WORLD_LOCAL_SIZE", "1"}};
  expect_group(detect(one), 0, 1, 0, 1, "127.0.0.1", kDefaultMasterPort, "openmpi");
  expect_contains(detect_error(without(kMpirun, {"OMPI_COMM_WORLD_LOCAL_SIZE"})), {"OMPI_COMM_WORLD_LOCAL_SIZE", "not set"});
  expect_contains(detect_error(with(kMpirun, {{"OMPI_COMM_WORLD_LOCAL_RANK", "2"}})),
                  {"OMPI_COMM_WORLD_LOCAL_RANK=2", "OMPI_COMM_WORLD_LOCAL_SIZE=2"});
}

// --- single process ---------------------------------------------------------------------------------------------------

TEST(Topology, SingleProcess) {
  expect_group(detect({}), 0, 1, 0, 1, "127.0.0.1", kDefaultMasterPort, "single");
  expect_group(detect({{"MASTER_PORT", "31000"}, {"LOCAL_RANK", "0"}}), 0, 1, 0, 1, "127.0.0.1", 31000, "single");
  expect_contains(detect_error({{"MASTER_PORT", "http"}}), {"MASTER_PORT=\"http\""});
}

TEST(Topology, ProcessEnvironment) {
  ::setenv("MOETUNE_TEST_TOPOLOGY_VARIABLE", "42", 1);
  const EnvLookup env = process_environment();
  EXPECT_EQ(env("MOETUNE_TEST_TOPOLOGY_VARIABLE"), std::optional<std::string>("42"));
  ::unsetenv("MOETUNE_TEST_TOPOLOGY_VARIABLE");
  EXPECT_EQ(env("MOETUNE_TEST_TOPOLOGY_VARIABLE"), std::nullopt);
}

// --- Slurm hostlists --------------------------------------------------------------------------------------------------

using Hosts = std::vector<std::string>;

TEST(SlurmNodelist, Expands) {
  EXPECT_EQ(expand_slurm_nodelist("node[01-04,07]"), (Hosts{"node01", "node02", "node03", "node04", "node07"}));
  EXPECT_EQ(expand_slurm_nodelist("host"), (Hosts{"host"}));
  EXPECT_EQ(expand_slurm_nodelist("a1,b[2-3],c"), (Hosts{"a1", "b2", "b3", "c"}));
  EXPECT_EQ(expand_slurm_nodelist("node[8-11]"), (Hosts{"node8", "node9", "node10", "node11"}));
  EXPECT_EQ(expand_slurm_nodelist("node[098-101]"), (Hosts{"node098", "node099", "node100", "node101"}));
  EXPECT_EQ(expand_slurm_nodelist("gpu-[001-002]-ib"), (Hosts{"gpu-001-ib", "gpu-002-ib"}));
  EXPECT_EQ(expand_slurm_nodelist("r[1-2]n[1,3]"), (Hosts{"r1n1", "r1n3", "r2n1", "r2n3"}));
  EXPECT_EQ(expand_slurm_nodelist("x[5],y[0-1,9]"), (Hosts{"x5", "y0", "y1", "y9"}));
  EXPECT_EQ(expand_slurm_nodelist("dgx-h200.cluster"), (Hosts{"dgx-h200.cluster"}));
}

TEST(SlurmNodelist, RejectsMalformed) {
  for (const std::string bad : {"", "a,,b", "node[1-", "node]1", "node[3-1]", "node[a-b]", "node[]", "node[1-2",
                                "node[1,]", "node[[1]]", "a,", "node[-3]"}) {
    const std::string error = error_of([&] { expand_slurm_nodelist(bad); });
    EXPECT_NE(error.find("hostlist"), std::string::npos) << "\"" << bad << "\" -> " << error;
  }
}

TEST(SlurmNodelist, TasksPerNode) {
  EXPECT_EQ(expand_slurm_tasks_per_node("8"), (std::vector<int>{8}));
  EXPECT_EQ(expand_slurm_tasks_per_node("4(x2),3"), (std::vector<int>{4, 4, 3}));
  EXPECT_EQ(expand_slurm_tasks_per_node("2,1(x3)"), (std::vector<int>{2, 1, 1, 1}));
  for (const std::string bad : {"", "x", "4(x)", "4(x2", "4(2)", "0", "4,,4", "-1"})
    EXPECT_FALSE(error_of([&] { expand_slurm_tasks_per_node(bad); }).empty()) << bad;
}

TEST(Topology, NcclCommId) {
  ProcessGroupInfo g;
  g.master_addr = "10.0.0.1";
  g.master_port = 29500;
  EXPECT_EQ(nccl_comm_id(g), "10.0.0.1:29500");
  g.master_addr = "gpu-a07";
  EXPECT_EQ(nccl_comm_id(g), "gpu-a07:29500");
  g.master_addr = "fe80::1";
  g.master_port = 1234;
  EXPECT_EQ(nccl_comm_id(g), "[fe80::1]:1234");
}

// --- EP x DP layout ---------------------------------------------------------------------------------------------------

ProcessGroupInfo group_of(int world, int per_node) {
  ProcessGroupInfo g;
  g.world_size = world;
  g.local_world_size = per_node;
  g.source = "torchrun";
  return g;
}

TEST(ParallelLayout, TwoNodesOfFour) {
  // ep 4 dp 2 on 2 x 4 GPUs: an EP group per node, DP pairs across nodes.
  const ParallelLayout layout = make_parallel_layout(4, 2, group_of(8, 4), 16);
  const int ep_rank[8] = {0, 1, 2, 3, 0, 1, 2, 3};
  const int dp_rank[8] = {0, 0, 0, 0, 1, 1, 1, 1};
  for (int r = 0; r < 8; ++r) {
    EXPECT_EQ(layout.ep_rank(r), ep_rank[r]) << r;
    EXPECT_EQ(layout.dp_rank(r), dp_rank[r]) << r;
    EXPECT_EQ(layout.rank_of(ep_rank[r], dp_rank[r]), r);
  }
  EXPECT_EQ(layout.ep_group(5), (std::vector<int>{4, 5, 6, 7}));
  EXPECT_EQ(layout.dp_group(5), (std::vector<int>{1, 5}));
  EXPECT_EQ(layout.experts_per_rank(), 4);
  EXPECT_EQ(layout.owned_experts(5).begin, 4);
  EXPECT_EQ(layout.owned_experts(5).end, 8);
  EXPECT_EQ(layout.owned_experts(3).begin, 12);
  EXPECT_EQ(layout.owner_ep_rank(13), 3);
  const auto owns = layout.owns_expert_filter(6);  // ep rank 2: experts 8..11, every layer
  for (int e = 0; e < 16; ++e) EXPECT_EQ(owns(0, e), e >= 8 && e < 12) << e;
  EXPECT_TRUE(owns(47, 9));
}

// Every rank in exactly one EP group and one DP group; each EP group holds each expert exactly once; DP groups share
// experts; owner_ep_rank agrees with owned_experts.
void check_layout(const ParallelLayout& layout) {
  const int world = layout.world_size();
  std::vector<int> in_ep(world, 0), in_dp(world, 0);
  for (int d = 0; d < layout.dp; ++d) {
    const std::vector<int> group = layout.ep_group(layout.rank_of(0, d));
    ASSERT_EQ(static_cast<int>(group.size()), layout.ep);
    std::vector<int> holders(layout.experts, 0);
    for (const int r : group) {
      ++in_ep[r];
      EXPECT_EQ(layout.ep_group(r), group);
      EXPECT_EQ(layout.dp_rank(r), d);
      const ExpertRange range = layout.owned_experts(r);
      EXPECT_EQ(range.count(), layout.experts / layout.ep);
      for (int e = range.begin; e < range.end; ++e) {
        ++holders[e];
        EXPECT_EQ(layout.owner_ep_rank(e), layout.ep_rank(r));
      }
    }
    for (int e = 0; e < layout.experts; ++e) EXPECT_EQ(holders[e], 1) << "expert " << e << " in EP group " << d;
  }
  for (int e = 0; e < layout.ep; ++e) {
    const std::vector<int> group = layout.dp_group(layout.rank_of(e, 0));
    ASSERT_EQ(static_cast<int>(group.size()), layout.dp);
    for (const int r : group) {
      ++in_dp[r];
      EXPECT_EQ(layout.owned_experts(r).begin, layout.owned_experts(group[0]).begin);
      EXPECT_EQ(layout.dp_group(r), group);
    }
  }
  for (int r = 0; r < world; ++r) {
    EXPECT_EQ(in_ep[r], 1) << r;
    EXPECT_EQ(in_dp[r], 1) << r;
  }
}

TEST(ParallelLayout, DefinitionHoldsForManyShapes) {
  struct Shape {
    int ep, dp, world, per_node, experts;
  };
  for (const Shape s : {Shape{1, 1, 1, 1, 8}, Shape{2, 1, 2, 2, 8}, Shape{8, 1, 8, 8, 128}, Shape{4, 4, 16, 8, 64},
                        Shape{16, 2, 32, 8, 128}, Shape{1, 8, 8, 4, 60}, Shape{2, 4, 8, 8, 60}}) {
    SCOPED_TRACE(testing::Message() << "ep " << s.ep << " dp " << s.dp << " world " << s.world);
    check_layout(make_parallel_layout(s.ep, s.dp, group_of(s.world, s.per_node), s.experts));
  }
}

TEST(ParallelLayout, DerivedSizes) {
  const ParallelLayout a = make_parallel_layout(0, 2, group_of(8, 8), 64);
  EXPECT_EQ(a.ep, 4);
  EXPECT_EQ(a.dp, 2);
  const ParallelLayout b = make_parallel_layout(2, 0, group_of(8, 8), 64);
  EXPECT_EQ(b.dp, 4);
  const ParallelLayout c = make_parallel_layout(0, 0, group_of(8, 8), 64);
  EXPECT_EQ(c.ep, 1);
  EXPECT_EQ(c.dp, 8);
  const ParallelLayout dense = make_parallel_layout(1, 4, group_of(4, 4), 0);
  EXPECT_EQ(dense.owned_experts(3).count(), 0);
}

TEST(ParallelLayout, Errors) {
  expect_contains(error_of([] { make_parallel_layout(4, 4, group_of(8, 8), 64); }), {"--ep 4", "--dp 4", "16", "8"});
  expect_contains(error_of([] { make_parallel_layout(3, 0, group_of(8, 8), 60); }), {"--ep 3", "world size 8"});
  expect_contains(error_of([] { make_parallel_layout(0, 3, group_of(8, 8), 60); }), {"--dp 3", "world size 8"});
  expect_contains(error_of([] { make_parallel_layout(8, 1, group_of(8, 8), 60); }), {"--ep 8", "60 experts"});
  expect_contains(error_of([] { make_parallel_layout(2, 1, group_of(2, 2), 0); }), {"--ep 2", "routed experts"});
  expect_contains(error_of([] { make_parallel_layout(-1, 1, group_of(2, 2), 8); }), {"positive"});
  // 3 GPUs per node, ep 2: an EP group would straddle two nodes.
  expect_contains(error_of([] { make_parallel_layout(2, 3, group_of(6, 3), 8); }), {"--ep 2", "3 processes per node"});
  // 4 per node, ep 8: whole nodes, allowed; ep 6 with 4 per node is not.
  EXPECT_EQ(make_parallel_layout(8, 2, group_of(16, 4), 64).ep, 8);
  expect_contains(error_of([] { make_parallel_layout(6, 2, group_of(12, 4), 60); }), {"--ep 6", "4 processes per node"});
}

}  // namespace
}  // namespace moetune::parallel
