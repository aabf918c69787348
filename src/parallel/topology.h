// Why: a multi-GPU run is many copies of one process, and each copy must learn who it is (rank), how many there are
// (world size), which GPU of its node it drives (local rank), and where rank 0 listens for the NCCL bootstrap, from
// whichever launcher started it: torchrun (or `moetune launch`, which sets the same variables), Slurm's srun, or
// OpenMPI's mpirun. This file reads those variables into one ProcessGroupInfo, refusing any set that is incomplete or
// contradicts itself (one line naming the launcher, the variables and their values), and derives from it the layout of
// expert parallelism (EP) times data parallelism (DP): which ranks share a token exchange, which ones average
// gradients, and which experts each rank holds. Pure functions of the environment, so every launcher is testable
// without launching anything (docs/PARALLEL.md shows the command lines).
//
// Ranks are assumed to be laid out node by node (rank = node * local_world_size + local_rank, the same count on every
// node): torchrun, `moetune launch`, srun's default block distribution and mpirun --map-by slot all do this, and the
// layout below relies on it to keep an EP group inside one node (NVLink) whenever it fits.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace moetune::parallel {

// Port rank 0 listens on for the bootstrap when no launcher names one (torchrun's default).
constexpr int kDefaultMasterPort = 29500;

struct ProcessGroupInfo {
  int rank = 0;              // 0 .. world_size-1
  int world_size = 1;        // processes in the run
  int local_rank = 0;        // 0 .. local_world_size-1; the GPU this process drives on its node
  int local_world_size = 1;  // processes per node (the same on every node)
  std::string master_addr = "127.0.0.1";  // host of rank 0 (name or address)
  int master_port = kDefaultMasterPort;
  std::string source = "single";  // "torchrun", "slurm", "openmpi" or "single"
  // torchrun's agent already serves a TCPStore on master_port (TORCHELASTIC_USE_AGENT_STORE=True), so rank 0 cannot
  // listen there: the NCCL bootstrap takes the next port (bootstrap_port()).
  bool master_port_taken = false;

  int nodes() const { return world_size / local_world_size; }
  int node_rank() const { return rank / local_world_size; }
  int bootstrap_port() const {
    if (!master_port_taken) return master_port;
    return master_port < 65535 ? master_port + 1 : master_port - 1;
  }
};

// Reads one environment variable; nullopt when it is not set. Injectable so tests need not touch the real environment.
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;
EnvLookup process_environment();                                         // getenv
EnvLookup environment_from(std::map<std::string, std::string> variables);  // a fixed set (tests)

// Which launcher started this process, by the first family of variables present, in this order:
//   torchrun (also `moetune launch`, deepspeed and accelerate): RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
//     MASTER_ADDR, MASTER_PORT — all six required; TORCHELASTIC_USE_AGENT_STORE=True sets master_port_taken.
//   OpenMPI (mpirun): OMPI_COMM_WORLD_RANK, _SIZE, _LOCAL_RANK, _LOCAL_SIZE; MASTER_ADDR required when the world has
//     more than one process (mpirun does not know where rank 0 will listen; `mpirun -x MASTER_ADDR=host`),
//     MASTER_PORT optional.
//   Slurm (srun): SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID; processes per node from SLURM_NTASKS_PER_NODE, else
//     SLURM_STEP_TASKS_PER_NODE, else SLURM_TASKS_PER_NODE ("4(x2)" form, equal counts required); rank 0's host from
//     MASTER_ADDR, else the first host of SLURM_STEP_NODELIST / SLURM_NODELIST (rank 0 runs there under block
//     distribution), else SLURM_LAUNCH_NODE_IPADDR; port from MASTER_PORT, else 29500 + SLURM_JOB_ID % 1000 (two jobs
//     sharing a node do not collide).
//   none of these: a single process (rank 0 of 1, 127.0.0.1, MASTER_PORT or 29500).
// torchrun comes first because `srun torchrun` and `mpirun torchrun` start torchrun per node, and its variables describe
// the real world; OpenMPI before Slurm because mpirun inside an allocation inherits the batch step's SLURM_PROCID.
// Throws moetune::Error naming the launcher and the variables: a missing or non-integer variable, rank >= world size,
// local rank >= local size, a world not a multiple of the per-node count, ranks not laid out node by node, a bad port.
ProcessGroupInfo detect_process_group(const EnvLookup& env);
ProcessGroupInfo detect_process_group();  // from this process's environment

// Hosts of a Slurm hostlist, in order: "node[01-03,07],gpu5" -> node01 node02 node03 node07 gpu5. Brackets may hold
// numbers and ranges (zero padding kept from the range's first bound) and may appear more than once per name
// ("r[1-2]n[1-2]" -> r1n1 r1n2 r2n1 r2n2). Throws moetune::Error on unbalanced brackets, a bad range, or an empty list.
std::vector<std::string> expand_slurm_nodelist(const std::string& nodelist);

// Per-node task counts of SLURM_TASKS_PER_NODE: "4(x2),3" -> {4, 4, 3}. Throws on a malformed value.
std::vector<int> expand_slurm_tasks_per_node(const std::string& value);

// The NCCL bootstrap address of the run, as NCCL_COMM_ID reads it: "host:port" (port: bootstrap_port()),
// "[v6addr]:port" for an IPv6 address. Rank 0 listens there; the others connect.
std::string nccl_comm_id(const ProcessGroupInfo& group);

// --- expert parallelism x data parallelism ----------------------------------------------------------------------------
//
// world = ep * dp. The ranks of one EP group exchange tokens (all-to-all dispatch and combine, every MoE layer) and
// together hold every expert once; the ranks of one DP group hold the same experts and average their gradients. EP
// groups are blocks of consecutive ranks, so an EP group of at most one node's size stays inside one node (NVLink),
// and a larger one spans whole nodes:
//   rank = dp_rank * ep + ep_rank,   EP group d = ranks [d*ep, (d+1)*ep),   DP group e = ranks {e, e+ep, e+2ep, ...}.
// Example, 2 nodes x 4 GPUs, ep 4 dp 2: EP groups {0,1,2,3} (node 0) and {4,5,6,7} (node 1); DP groups {0,4} ... {3,7}.
// Expert e of E lives on ep_rank e / (E/ep): contiguous blocks of E/ep experts, the same on every layer.
struct ExpertRange {
  int begin = 0, end = 0;  // [begin, end)
  int count() const { return end - begin; }
  bool contains(int expert) const { return expert >= begin && expert < end; }
};

struct ParallelLayout {
  int ep = 1, dp = 1;
  int experts = 0;  // routed experts per MoE layer (0: a dense model, nothing to shard)

  int world_size() const { return ep * dp; }
  int ep_rank(int rank) const { return rank % ep; }
  int dp_rank(int rank) const { return rank / ep; }
  int rank_of(int ep_rank, int dp_rank) const { return dp_rank * ep + ep_rank; }
  std::vector<int> ep_group(int rank) const;  // ranks exchanging tokens with `rank`, ascending (rank included)
  std::vector<int> dp_group(int rank) const;  // ranks holding the same experts as `rank`, ascending (rank included)

  int experts_per_rank() const { return experts / ep; }
  ExpertRange owned_experts(int rank) const;  // the block of experts `rank` holds (every layer)
  int owner_ep_rank(int expert) const { return expert / experts_per_rank(); }
  // The filter LoadOptions::owns_expert takes (io/streaming_loader.h): `rank` reads only its experts.
  std::function<bool(int layer, int expert)> owns_expert_filter(int rank) const;
};

// The layout of `--ep EP --dp DP` for this group and a model of `experts` routed experts. 0 leaves a size to be
// derived: ep 0 -> world / dp, dp 0 -> world / ep, both 0 -> ep 1 (pure data parallelism). Throws moetune::Error when
// ep * dp != world size, experts % ep != 0 (for experts > 0), or an EP group would straddle nodes unevenly (ep neither a
// divisor nor a multiple of the per-node process count).
ParallelLayout make_parallel_layout(int ep, int dp, const ProcessGroupInfo& group, int experts);

}  // namespace moetune::parallel
