// Why: data parallelism averages every gradient over the ranks that hold the same parameters (the DP group for expert
// weights, the world for the replicated rest), and a ZeRO-1 optimizer additionally splits the optimizer step over those
// ranks: reduce-scatter the gradients so each rank has the mean of its shard, step the shard, all-gather the
// parameters. These are the few calls that do it on the engine's flat bf16 arenas (shards: parallel/shard_layout.h).
// GpuTrainer's ZeRO-1 (gpu/zero_optimizer.h) runs reduce_scatter_sum and all_gather_shards on segment bodies that
// need no padding (parallel/zero_layout.h).
//
// Precision. NCCL reduces bf16 in bf16: ncclAvg multiplies each rank's value by the bf16-rounded 1/P, and every partial
// sum of a ring or tree is rounded to bf16 again (P - 1 roundings; exact division only when P is a power of two). The
// *_fp32 variants convert to fp32 first, reduce in fp32 (one rounding at the end) and move twice the bytes. Use them for
// large P or when the bf16 recipe's gradient noise matters; with P = 2 the two agree up to one bf16 rounding.
//
// All calls are collective over `comm` (every rank calls them with the same sizes, in the same order), enqueued on
// `stream`, without host synchronisation.
#pragma once

#include <cstddef>

#include "ops/cuda/cuda_check.h"
#include "parallel/nccl_comm.h"
#include "parallel/shard_layout.h"

namespace moetune::cuda {

// grads (count) bf16, in place: the mean over comm's ranks, reduced in bf16 by NCCL.
void all_reduce_mean(const parallel::NcclComm& comm, bf16* grads, size_t count, cudaStream_t stream);

// grads (count) bf16, in place: the mean over comm's ranks, reduced in fp32. scratch (count) fp32, overwritten.
void all_reduce_mean_fp32(const parallel::NcclComm& comm, bf16* grads, float* scratch, size_t count,
                          cudaStream_t stream);

// ZeRO-1, gradients. arena (layout.padded()) bf16, in place: afterwards [layout.begin(rank), + layout.shard) holds
// the mean over comm's ranks of that shard (the other shards are left as NCCL leaves them: don't read them). The
// padding [layout.count, padded) must be zero. layout.ranks must equal comm.size().
void reduce_scatter_mean(const parallel::NcclComm& comm, bf16* arena, const parallel::ShardLayout& layout,
                         cudaStream_t stream);

// ZeRO-1, gradients that are sums (GpuTrainer: each rank pre-scales its loss by 1 / (labels x world)): as
// reduce_scatter_mean, with the sum over comm's ranks instead of the mean.
void reduce_scatter_sum(const parallel::NcclComm& comm, bf16* arena, const parallel::ShardLayout& layout,
                        cudaStream_t stream);

// ZeRO-1, gradients reduced in fp32 (for the mixed recipe, whose optimizer reads fp32): grads (layout.count) bf16,
// unchanged; scratch (layout.padded()) fp32, overwritten: afterwards scratch[begin(rank), + shard) holds the mean of
// this rank's shard (padding reads as zero).
void reduce_scatter_mean_fp32(const parallel::NcclComm& comm, const bf16* grads, float* scratch,
                              const parallel::ShardLayout& layout, cudaStream_t stream);

// ZeRO-1, parameters. arena (layout.padded()) bf16, in place: every rank's shard [begin(r), + shard), as rank r holds
// it, is copied to every rank, so all ranks end with the same arena.
void all_gather_shards(const parallel::NcclComm& comm, bf16* arena, const parallel::ShardLayout& layout,
                       cudaStream_t stream);

}  // namespace moetune::cuda
