// Why: see gradient_sync.h. Thin on purpose: the arithmetic is NCCL's; what lives here is the choice of reduction type,
// the in-place shard addressing, and the checks that a layout matches its communicator.
#include "gpu/gradient_sync.h"

#include "gpu/elementwise.h"

namespace moetune::cuda {

namespace {

void check_layout(const char* what, const parallel::NcclComm& comm, const parallel::ShardLayout& layout) {
  if (layout.ranks != comm.size())
    fail(what, ": a shard layout of ", layout.ranks, " ranks on a communicator of ", comm.size());
}

// The arena's rank-th shard becomes the reduction (op) of every rank's arena over comm.
void reduce_scatter_in_place(const char* what, const parallel::NcclComm& comm, bf16* arena,
                             const parallel::ShardLayout& layout, ncclRedOp_t op, cudaStream_t stream) {
  check_layout(what, comm, layout);
  if (layout.shard == 0) return;
  comm.reduce_scatter(arena, arena + layout.begin(comm.rank()), layout.shard, op, stream);
}

}  // namespace

void all_reduce_mean(const parallel::NcclComm& comm, bf16* grads, size_t count, cudaStream_t stream) {
  if (count > 0) comm.all_reduce(grads, grads, count, ncclAvg, stream);
}

void all_reduce_mean_fp32(const parallel::NcclComm& comm, bf16* grads, float* scratch, size_t count,
                          cudaStream_t stream) {
  if (count == 0) return;
  convert_bf16_to_f32(scratch, grads, count, stream);
  comm.all_reduce(scratch, scratch, count, ncclAvg, stream);
  convert_f32_to_bf16(grads, scratch, count, stream);
}

void reduce_scatter_mean(const parallel::NcclComm& comm, bf16* arena, const parallel::ShardLayout& layout,
                         cudaStream_t stream) {
  reduce_scatter_in_place("reduce_scatter_mean", comm, arena, layout, ncclAvg, stream);
}

void reduce_scatter_sum(const parallel::NcclComm& comm, bf16* arena, const parallel::ShardLayout& layout,
                        cudaStream_t stream) {
  reduce_scatter_in_place("reduce_scatter_sum", comm, arena, layout, ncclSum, stream);
}

void reduce_scatter_mean_fp32(const parallel::NcclComm& comm, const bf16* grads, float* scratch,
                              const parallel::ShardLayout& layout, cudaStream_t stream) {
  check_layout("reduce_scatter_mean_fp32", comm, layout);
  if (layout.shard == 0) return;
  if (layout.count > 0) convert_bf16_to_f32(scratch, grads, layout.count, stream);
  const size_t padding = layout.padded() - layout.count;
  if (padding > 0) CUDA_CHECK(cudaMemsetAsync(scratch + layout.count, 0, padding * sizeof(float), stream));
  float* shard = scratch + layout.begin(comm.rank());
  comm.reduce_scatter(scratch, shard, layout.shard, ncclAvg, stream);
}

void all_gather_shards(const parallel::NcclComm& comm, bf16* arena, const parallel::ShardLayout& layout,
                       cudaStream_t stream) {
  check_layout("all_gather_shards", comm, layout);
  if (layout.shard == 0) return;
  const bf16* shard = arena + layout.begin(comm.rank());
  comm.all_gather(shard, arena, layout.shard, stream);
}

}  // namespace moetune::cuda
