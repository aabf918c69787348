// Why: ZeRO-1 for GpuTrainer (GpuOptions::zero_stage 1): the AdamW state of data-parallel training sharded over the
// ranks that share the parameters, so optimizer memory per GPU falls as 1/P. Which rank steps which elements is
// parallel/zero_layout.h (per gradient group and per run of parameters shared by the same ranks: replicated ones over
// the world, routed experts over the expert replicas, the DP group); this class holds this rank's state and runs the
// three phases on the trainer's layout-order arenas, in place:
//   reduce_scatter  the gradients of a range of groups: each segment's body reduce-scattered (summed, as the all-reduce
//                   without ZeRO sums: each rank pre-scales its loss), its tail all-reduced;
//   update          AdamW on this rank's body shard and on the tail, the state read from the sharded arenas;
//   all_gather      the updated bf16 parameters of the bodies, from every rank to every rank.
// Element by element the arithmetic is that of the unsharded step (AdamW is elementwise, a sum of two bf16 values does
// not depend on the order), so with two ranks and no clipping the trajectory is the unsharded one bit for bit; with
// clipping the global norm is summed in another order (grad_norm_squared_share).
//
// Every state arena (the two moments; recipe (b)'s fp32 master weights) is this rank's ZeroLayout::state_elements. The
// full-layout state for checkpoints (export_moments, download_masters) is gathered from every rank's shards, and
// import_moments / set_masters take the full layout and keep this rank's parts, so a checkpoint moves between ZeRO and
// no ZeRO, between DP sizes and to one GPU. The gathers are collective over the world and the expert replicas: every
// rank calls them, in the same order; ranks passing keep = false take part without building the host copy.
// All calls on the given stream; the collectives as parallel/nccl_comm.h (enqueued, no host synchronisation) unless
// the comment says otherwise.
#pragma once

#include <cstddef>
#include <vector>

#include "ops/cuda/adamw.h"
#include "ops/cuda/device_buffer.h"
#include "parallel/nccl_comm.h"
#include "parallel/zero_layout.h"

namespace moetune::cuda {

class ZeroOptimizer {
 public:
  // params: the trainer's layout as zero_layout() takes it. mixed: recipe (b) (fp32 masters and moments), else bf16
  // moments (recipe (a)). replicas: the ranks sharing this rank's experts, nullptr when none but itself.
  ZeroOptimizer(const std::vector<parallel::ZeroParam>& params, bool mixed, const parallel::NcclComm& world,
                const parallel::NcclComm* replicas);

  size_t optimizer_bytes() const;  // both moments
  size_t master_bytes() const;     // recipe (b)'s masters (0 for recipe (a))

  // Masters of this rank's parts: from the bf16 parameters (params: the full layout), or exactly from fp32 host values
  // of the full layout (synchronous).
  void set_masters(const bf16* params, cudaStream_t stream);
  void set_masters(const float* host_params);

  // Segments inside the layout range [from, to) (whole gradient groups): grads holds layout element `from` at grads[0].
  // Collective (the segments' communicators).
  void reduce_scatter(bf16* grads, size_t from, size_t to, cudaStream_t stream) const;
  // Steps this rank's parts of [from, to): params (the full layout, bf16) and the sharded state; grads as above,
  // reduced by reduce_scatter. grad_scale: the clipping factor, or 1.
  void update(bf16* params, const bf16* grads, size_t from, size_t to, const AdamWHyper& hyper, float grad_scale,
              cudaStream_t stream);
  // The bodies of [from, to) of params (full layout, bf16) from their owners to every rank. Collective.
  void all_gather(bf16* params, size_t from, size_t to, cudaStream_t stream) const;

  // Sum of the squared reduced gradients this rank counts (its body shards, the tails where it is the segment's rank
  // 0) over the whole arena `grads` (full layout); summed over the world it is the squared global norm, each element
  // once. Synchronises `stream`.
  double grad_norm_squared_share(const bf16* grads, cudaStream_t stream);

  // The full-layout fp32 moments (exp_avg, exp_avg_sq: layout size; alignment gaps zero) gathered from every rank;
  // keep = false: take part, leave them empty. Collective; synchronises `stream`.
  void export_moments(size_t layout_size, std::vector<float>& exp_avg, std::vector<float>& exp_avg_sq, bool keep,
                      cudaStream_t stream) const;
  // Recipe (b): the full-layout fp32 master weights, gathered as export_moments (empty when keep = false).
  std::vector<float> download_masters(size_t layout_size, bool keep, cudaStream_t stream) const;
  // This rank's parts of full-layout moments (recipe (a) rounds them to bf16, exact for moments it exported).
  // Synchronous.
  void import_moments(const std::vector<float>& exp_avg, const std::vector<float>& exp_avg_sq);

 private:
  struct Plans {
    AdamWPlan own, tail;  // the parts' spans, on the device
  };
  const parallel::NcclComm& comm_of(const parallel::ZeroSegment& segment) const;
  bool inside(const parallel::ZeroSegment& segment, size_t from, size_t to) const;
  // This rank's parts of a full-layout host arena, in state order (rounded to T).
  template <class T>
  std::vector<T> parts_of(const float* full) const;
  // A full-layout host arena from a sharded state arena: bodies gathered over their communicators, tails local.
  template <class T>
  std::vector<float> gather_state(const T* state, size_t layout_size, bool keep, cudaStream_t stream) const;

  parallel::ZeroLayout layout_;
  std::vector<Plans> plans_;  // per segment
  bool mixed_;
  const parallel::NcclComm& world_;
  const parallel::NcclComm* replicas_;
  DeviceBuffer<bf16> m16_, v16_;           // recipe (a): (state_elements)
  DeviceBuffer<float> master_, m32_, v32_;  // recipe (b): (state_elements)
  DeviceBuffer<float> norm_parts_;          // (2 x segments) one squared norm per part
  DeviceBuffer<float> norm_scratch_;        // (grad_norm_scratch_floats())
};

}  // namespace moetune::cuda
