// Why: the few agreements a run of many processes needs outside training itself, over NCCL: a barrier (rank 0 builds
// the data cache before the others read it), the largest of the ranks' values (a stop signal caught by some ranks
// only; a failure flag or rank 0's process id during a cooperative save, io/checkpoint_writer.h).
#pragma once

#ifdef MOETUNE_HAVE_CUDA

#include "parallel/nccl_comm.h"

namespace moetune::cli {

// Returns once every rank of `comm` has called it.
void barrier(const parallel::NcclComm& comm);

// The largest of the ranks' values (collective).
int max_over_ranks(const parallel::NcclComm& comm, int value);

}  // namespace moetune::cli

#endif
