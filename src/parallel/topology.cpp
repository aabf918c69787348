// Why: see topology.h. Every check names the launcher and the variables with their values, because a multi-node run
// that starts with a wrong rank does not fail: it hangs in the first collective.
#include "parallel/topology.h"

#include <charconv>
#include <cstdlib>
#include <utility>

#include "core/error.h"

namespace moetune::parallel {

EnvLookup process_environment() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    if (!value) return std::nullopt;
    return std::string(value);
  };
}

EnvLookup environment_from(std::map<std::string, std::string> variables) {
  return [variables = std::move(variables)](const std::string& name) -> std::optional<std::string> {
    const auto it = variables.find(name);
    if (it == variables.end()) return std::nullopt;
    return it->second;
  };
}

namespace {

// A whole decimal integer in [0, 2^31), or nullopt.
std::optional<int> parse_count(const std::string& text) {
  int value = 0;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || ptr != end || value < 0) return std::nullopt;
  return value;
}

// Reads the variables of one launcher, with errors that name it.
class LauncherEnv {
 public:
  LauncherEnv(const EnvLookup& env, std::string launcher) : env_(env), launcher_(std::move(launcher)) {}

  std::optional<std::string> get(const std::string& name) const { return env_(name); }
  bool has(const std::string& name) const { return env_(name).has_value(); }
  const std::string& launcher() const { return launcher_; }

  // The first of `names` that is set, or nullopt.
  std::optional<std::pair<std::string, std::string>> first_of(std::initializer_list<const char*> names) const {
    for (const char* name : names)
      if (auto value = env_(name)) return std::make_pair(std::string(name), *value);
    return std::nullopt;
  }

  int integer(const std::string& name, const std::string& value) const {
    const std::optional<int> parsed = parse_count(value);
    if (!parsed) fail(launcher_, " environment: ", name, "=\"", value, "\" is not a non-negative integer");
    return *parsed;
  }
  int integer(const std::string& name) const { return integer(name, require(name)); }

  std::string require(const std::string& name) const {
    const std::optional<std::string> value = env_(name);
    if (!value) fail(launcher_, " environment: ", name, " is not set");
    return *value;
  }

  // Fails naming every variable of `names` that is not set.
  void require_all(std::initializer_list<const char*> names) const {
    std::string missing;
    for (const char* name : names)
      if (!env_(name)) missing += (missing.empty() ? "" : ", ") + std::string(name);
    if (!missing.empty())
      fail(launcher_, " environment: ", missing, " not set (", launcher_, " sets ", join(names),
           "; moetune needs all of them)");
  }

  int port(const std::string& name, const std::string& value) const {
    const std::optional<int> parsed = parse_count(value);
    if (!parsed || *parsed < 1 || *parsed > 65535)
      fail(launcher_, " environment: ", name, "=\"", value, "\" is not a port number (1-65535)");
    return *parsed;
  }

 private:
  static std::string join(std::initializer_list<const char*> names) {
    std::string text;
    for (const char* name : names) text += (text.empty() ? "" : ", ") + std::string(name);
    return text;
  }

  const EnvLookup& env_;
  std::string launcher_;
};

// The consistency every launcher's numbers must have; `names` spells the variables they came from, for the message.
struct RankNames {
  const char* rank;
  const char* world;
  const char* local_rank;
  const char* local_world;
};

void validate(const ProcessGroupInfo& g, const RankNames& n) {
  const std::string& who = g.source;
  if (g.world_size < 1) fail(who, " environment: ", n.world, "=", g.world_size, " must be at least 1");
  if (g.rank >= g.world_size)
    fail(who, " environment: ", n.rank, "=", g.rank, " is not below ", n.world, "=", g.world_size);
  if (g.local_world_size < 1) fail(who, " environment: ", n.local_world, "=", g.local_world_size, " must be at least 1");
  if (g.local_rank >= g.local_world_size)
    fail(who, " environment: ", n.local_rank, "=", g.local_rank, " is not below ", n.local_world, "=",
         g.local_world_size);
  if (g.world_size % g.local_world_size != 0)
    fail(who, " environment: ", n.world, "=", g.world_size, " is not a multiple of ", n.local_world, "=",
         g.local_world_size, " (moetune needs the same number of processes on every node)");
  if (g.rank % g.local_world_size != g.local_rank)
    fail(who, " environment: ", n.rank, "=", g.rank, " with ", n.local_rank, "=", g.local_rank, " of ", n.local_world,
         "=", g.local_world_size, ": ranks are not laid out node by node (rank = node * ", n.local_world, " + ",
         n.local_rank, "); use a block distribution (srun --distribution=block, mpirun --map-by slot)");
  if (g.master_addr.empty()) fail(who, " environment: the master address is empty");
}

ProcessGroupInfo from_torchrun(const EnvLookup& env) {
  const LauncherEnv e(env, "torchrun");
  e.require_all({"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"});
  ProcessGroupInfo g;
  g.source = "torchrun";
  g.rank = e.integer("RANK");
  g.world_size = e.integer("WORLD_SIZE");
  g.local_rank = e.integer("LOCAL_RANK");
  g.local_world_size = e.integer("LOCAL_WORLD_SIZE");
  g.master_addr = e.require("MASTER_ADDR");
  g.master_port = e.port("MASTER_PORT", e.require("MASTER_PORT"));
  g.master_port_taken = e.get("TORCHELASTIC_USE_AGENT_STORE") == std::optional<std::string>("True");
  validate(g, {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"});
  return g;
}

ProcessGroupInfo from_openmpi(const EnvLookup& env) {
  const LauncherEnv e(env, "openmpi");
  e.require_all({"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
                 "OMPI_COMM_WORLD_LOCAL_SIZE"});
  ProcessGroupInfo g;
  g.source = "openmpi";
  g.rank = e.integer("OMPI_COMM_WORLD_RANK");
  g.world_size = e.integer("OMPI_COMM_WORLD_SIZE");
  g.local_rank = e.integer("OMPI_COMM_WORLD_LOCAL_RANK");
  g.local_world_size = e.integer("OMPI_COMM_WORLD_LOCAL_SIZE");
  if (auto addr = e.get("MASTER_ADDR")) {
    g.master_addr = *addr;
  } else if (g.world_size > 1) {
    fail("openmpi environment: MASTER_ADDR is not set; mpirun does not say where rank 0 runs, so pass its host: "
         "mpirun -x MASTER_ADDR=<host of rank 0> [-x MASTER_PORT=<port>] ...");
  }
  if (auto port = e.get("MASTER_PORT")) g.master_port = e.port("MASTER_PORT", *port);
  validate(g, {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
               "OMPI_COMM_WORLD_LOCAL_SIZE"});
  return g;
}

ProcessGroupInfo from_slurm(const EnvLookup& env) {
  const LauncherEnv e(env, "slurm");
  ProcessGroupInfo g;
  g.source = "slurm";
  g.rank = e.integer("SLURM_PROCID");
  g.local_rank = e.integer("SLURM_LOCALID");
  // The step's numbers (srun) describe the processes really started; the job's are the allocation's.
  const auto world = e.first_of({"SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "SLURM_NPROCS"});
  if (!world) fail("slurm environment: SLURM_PROCID is set but SLURM_NTASKS is not (start moetune with srun)");
  const std::string world_name = world->first;
  g.world_size = e.integer(world->first, world->second);

  std::string local_name;
  if (auto per_node = e.first_of({"SLURM_STEP_TASKS_PER_NODE", "SLURM_NTASKS_PER_NODE", "SLURM_TASKS_PER_NODE"})) {
    local_name = per_node->first;
    std::vector<int> counts;
    if (local_name == "SLURM_NTASKS_PER_NODE") {
      counts = {e.integer(local_name, per_node->second)};
    } else {
      try {
        counts = expand_slurm_tasks_per_node(per_node->second);
      } catch (const Error& error) {
        fail("slurm environment: ", local_name, ": ", error.what());
      }
      long total = 0;
      for (const int count : counts) {
        if (count != counts.front())
          fail("slurm environment: ", local_name, "=\"", per_node->second,
               "\" gives nodes different task counts (moetune needs the same number of processes on every node)");
        total += count;
      }
      if (total != g.world_size)
        fail("slurm environment: ", local_name, "=\"", per_node->second, "\" adds up to ", total, " tasks but ",
             world_name, "=", g.world_size);
    }
    g.local_world_size = counts.front();
  } else {
    fail("slurm environment: none of SLURM_STEP_TASKS_PER_NODE, SLURM_NTASKS_PER_NODE, SLURM_TASKS_PER_NODE is set "
         "(start moetune with srun)");
  }

  if (auto addr = e.get("MASTER_ADDR")) {
    g.master_addr = *addr;
  } else if (auto nodelist = e.first_of({"SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST"})) {
    try {
      g.master_addr = expand_slurm_nodelist(nodelist->second).front();
    } catch (const Error& error) {
      fail("slurm environment: ", nodelist->first, ": ", error.what());
    }
  } else if (auto launch = e.get("SLURM_LAUNCH_NODE_IPADDR")) {
    g.master_addr = *launch;
  } else {
    fail("slurm environment: cannot tell rank 0's host: none of MASTER_ADDR, SLURM_STEP_NODELIST, SLURM_JOB_NODELIST, "
         "SLURM_NODELIST, SLURM_LAUNCH_NODE_IPADDR is set");
  }
  if (auto port = e.get("MASTER_PORT")) {
    g.master_port = e.port("MASTER_PORT", *port);
  } else if (auto job = e.get("SLURM_JOB_ID")) {
    g.master_port = kDefaultMasterPort + e.integer("SLURM_JOB_ID", *job) % 1000;
  }
  validate(g, {"SLURM_PROCID", world_name.c_str(), "SLURM_LOCALID", local_name.c_str()});
  return g;
}

ProcessGroupInfo single_process(const EnvLookup& env) {
  const LauncherEnv e(env, "single-process");
  ProcessGroupInfo g;
  if (auto port = e.get("MASTER_PORT")) g.master_port = e.port("MASTER_PORT", *port);
  return g;
}

}  // namespace

ProcessGroupInfo detect_process_group(const EnvLookup& env) {
  if (env("RANK") || env("WORLD_SIZE")) return from_torchrun(env);
  if (env("OMPI_COMM_WORLD_RANK") || env("OMPI_COMM_WORLD_SIZE")) return from_openmpi(env);
  if (env("SLURM_PROCID")) return from_slurm(env);
  return single_process(env);
}

ProcessGroupInfo detect_process_group() { return detect_process_group(process_environment()); }

// --- Slurm hostlists --------------------------------------------------------------------------------------------------

namespace {

// Expands every bracket of one hostlist item ("r[1-2]n[01,03]") into `out`, left to right.
void expand_item(const std::string& item, size_t from, const std::string& prefix, std::vector<std::string>& out,
                 const std::string& whole) {
  const size_t open = item.find('[', from);
  if (open == std::string::npos) {
    if (item.find(']', from) != std::string::npos) fail("unbalanced ']' in hostlist \"", whole, "\"");
    out.push_back(prefix + item.substr(from));
    return;
  }
  const std::string literal = item.substr(from, open - from);
  if (literal.find(']') != std::string::npos) fail("unbalanced ']' in hostlist \"", whole, "\"");
  const size_t close = item.find(']', open);
  if (close == std::string::npos) fail("unbalanced '[' in hostlist \"", whole, "\"");
  const std::string inside = item.substr(open + 1, close - open - 1);
  if (inside.empty() || inside.find('[') != std::string::npos) fail("bad brackets in hostlist \"", whole, "\"");
  size_t begin = 0;
  while (begin <= inside.size()) {
    size_t end = inside.find(',', begin);
    if (end == std::string::npos) end = inside.size();
    const std::string range = inside.substr(begin, end - begin);
    const size_t dash = range.find('-');
    const std::string low_text = range.substr(0, dash);
    const std::string high_text = dash == std::string::npos ? low_text : range.substr(dash + 1);
    const bool digits = !low_text.empty() && !high_text.empty() &&
                        low_text.find_first_not_of("0123456789") == std::string::npos &&
                        high_text.find_first_not_of("0123456789") == std::string::npos;
    if (!digits || low_text.size() > 9 || high_text.size() > 9)
      fail("bad range \"", range, "\" in hostlist \"", whole, "\"");
    const long low = std::stol(low_text), high = std::stol(high_text);
    if (high < low) fail("range \"", range, "\" runs backwards in hostlist \"", whole, "\"");
    if (high - low >= 100000) fail("range \"", range, "\" in hostlist \"", whole, "\" is too long");
    for (long n = low; n <= high; ++n) {
      std::string number = std::to_string(n);
      if (number.size() < low_text.size()) number.insert(0, low_text.size() - number.size(), '0');
      expand_item(item, close + 1, prefix + literal + number, out, whole);
    }
    begin = end + 1;
  }
}

}  // namespace

std::vector<std::string> expand_slurm_nodelist(const std::string& nodelist) {
  std::vector<std::string> hosts;
  size_t begin = 0;
  int depth = 0;
  for (size_t i = 0; i <= nodelist.size(); ++i) {
    const char c = i < nodelist.size() ? nodelist[i] : ',';
    if (c == '[') ++depth;
    if (c == ']') --depth;
    if (depth < 0) fail("unbalanced ']' in hostlist \"", nodelist, "\"");
    if (c == ',' && depth == 0) {
      const std::string item = nodelist.substr(begin, i - begin);
      if (item.empty()) fail("empty host in hostlist \"", nodelist, "\"");
      expand_item(item, 0, "", hosts, nodelist);
      begin = i + 1;
    }
  }
  if (depth != 0) fail("unbalanced '[' in hostlist \"", nodelist, "\"");
  return hosts;
}

std::vector<int> expand_slurm_tasks_per_node(const std::string& value) {
  std::vector<int> counts;
  size_t begin = 0;
  while (begin <= value.size()) {
    size_t end = value.find(',', begin);
    if (end == std::string::npos) end = value.size();
    const std::string item = value.substr(begin, end - begin);
    std::optional<int> count, repeat = 1;
    if (const size_t paren = item.find("(x"); paren != std::string::npos) {
      count = parse_count(item.substr(0, paren));
      if (item.back() != ')') repeat = std::nullopt;
      else repeat = parse_count(item.substr(paren + 2, item.size() - paren - 3));
    } else {
      count = parse_count(item);
    }
    if (!count || !repeat || *count < 1 || *repeat < 1 || *repeat > 1000000)
      fail("bad tasks-per-node entry \"", item, "\" in \"", value, "\" (expected N or N(xM), comma-separated)");
    counts.insert(counts.end(), static_cast<size_t>(*repeat), *count);
    begin = end + 1;
  }
  return counts;
}

std::string nccl_comm_id(const ProcessGroupInfo& group) {
  const bool v6 = group.master_addr.find(':') != std::string::npos;
  return (v6 ? "[" + group.master_addr + "]" : group.master_addr) + ":" + std::to_string(group.bootstrap_port());
}

// --- layout -----------------------------------------------------------------------------------------------------------

std::vector<int> ParallelLayout::ep_group(int rank) const {
  std::vector<int> ranks;
  for (int e = 0; e < ep; ++e) ranks.push_back(rank_of(e, dp_rank(rank)));
  return ranks;
}

std::vector<int> ParallelLayout::dp_group(int rank) const {
  std::vector<int> ranks;
  for (int d = 0; d < dp; ++d) ranks.push_back(rank_of(ep_rank(rank), d));
  return ranks;
}

ExpertRange ParallelLayout::owned_experts(int rank) const {
  const int per = experts_per_rank();
  return {ep_rank(rank) * per, (ep_rank(rank) + 1) * per};
}

std::function<bool(int, int)> ParallelLayout::owns_expert_filter(int rank) const {
  const ExpertRange range = owned_experts(rank);
  return [range](int, int expert) { return range.contains(expert); };
}

ParallelLayout make_parallel_layout(int ep, int dp, const ProcessGroupInfo& group, int experts) {
  const int world = group.world_size;
  if (ep < 0 || dp < 0) fail("--ep and --dp must be positive (got --ep ", ep, " --dp ", dp, ")");
  if (experts < 0) fail("a model cannot have ", experts, " experts");
  if (ep == 0 && dp == 0) ep = 1;
  if (ep == 0) {
    if (world % dp != 0) fail("--dp ", dp, " does not divide the world size ", world, " (", group.source, ")");
    ep = world / dp;
  }
  if (dp == 0) {
    if (world % ep != 0) fail("--ep ", ep, " does not divide the world size ", world, " (", group.source, ")");
    dp = world / ep;
  }
  if (static_cast<long>(ep) * dp != world)
    fail("--ep ", ep, " x --dp ", dp, " = ", static_cast<long>(ep) * dp, " processes, but the world has ", world, " (",
         group.source, ")");
  if (experts == 0 && ep > 1) fail("--ep ", ep, " needs a model with routed experts (this one has none)");
  if (experts > 0 && experts % ep != 0)
    fail("--ep ", ep, " does not divide the model's ", experts, " experts (each rank holds experts / ep of them)");
  const int local = group.local_world_size;
  if (local % ep != 0 && ep % local != 0)
    fail("--ep ", ep, " with ", local, " processes per node: an EP group must fit in one node (ep divides ", local,
         ") or span whole nodes (ep a multiple of ", local, ")");
  ParallelLayout layout;
  layout.ep = ep;
  layout.dp = dp;
  layout.experts = experts;
  return layout;
}

}  // namespace moetune::parallel
