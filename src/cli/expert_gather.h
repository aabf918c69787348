// Why: a multi-GPU `moetune train` saves one full Hugging Face checkpoint, written once by rank 0 with the existing
// writers, so rank 0 needs every rank's experts. This is the transport: the ranks of the first EP group all-gather their
// host arenas (the shard layout is the same size on every EP rank) over NCCL in bounded pieces, and rank 0 places each
// piece in the full arena (cli/rank_slices.h). Host memory: rank 0 holds the full fp32 arena it writes (4 bytes per
// parameter of the whole model, per arena gathered) plus one piece per EP rank; device memory: (EP + 1) pieces of
// kGatherPieceFloats. Also the two small agreements a run of many processes needs: a barrier, and the largest of the
// ranks' values (a stop signal caught by some ranks only).
#pragma once

#ifdef MOETUNE_HAVE_CUDA

#include <cstddef>
#include <vector>

#include "cli/rank_slices.h"
#include "parallel/nccl_comm.h"

namespace moetune::cli {

// Floats per rank moved by one all-gather (128 MB).
inline constexpr size_t kGatherPieceFloats = size_t{32} << 20;

// Collective over `ep` (the EP group): every rank passes its shard arena `local` (the same size on each) and
// runs_by_rank[q] = shard_runs(full config, shard config of EP rank q). EP rank 0 passes `full` (the full layout's arena,
// written where the shards' runs say: experts from every rank, replicated parameters from itself); the others nullptr.
void gather_expert_shards(const parallel::NcclComm& ep, const std::vector<std::vector<ShardRun>>& runs_by_rank,
                          const std::vector<float>& local, float* full);

// Returns once every rank of `comm` has called it.
void barrier(const parallel::NcclComm& comm);

// The largest of the ranks' values (collective).
int max_over_ranks(const parallel::NcclComm& comm, int value);

}  // namespace moetune::cli

#endif
