// Why: every multi-GPU path of moetune (expert exchange, gradient averaging, sharded optimizer) talks through NCCL
// communicators, and a communicator leaked, used on the wrong device or split differently on two ranks turns into a
// hang. NcclComm owns one communicator (destroyed with it), remembers its rank, size and CUDA device, and offers the
// few collectives moetune needs on typed device buffers, each checked (nccl_check.h).
//
// Creation, two ways:
//   - a launched run (one process per GPU; torchrun, `moetune launch`, Slurm, OpenMPI: parallel/topology.h):
//     NcclComm::world(group) selects the process's GPU (select_cuda_device), points NCCL_COMM_ID at rank 0's bootstrap
//     address (nccl_comm_id(group): MASTER_ADDR and MASTER_PORT, or MASTER_PORT+1 under torchrun's agent store)
//     unless the user set NCCL_COMM_ID already, and joins. With NCCL_COMM_ID set, every rank derives the same unique id
//     from the address, and NCCL's rank 0 listens there, so there is no out-of-band exchange to write or get wrong.
//     Multi-node works the same way (rank 0's host must be reachable from every node on that port).
//   - in one process (tests; one thread per GPU): NcclComm::unique_id() once, then NcclComm::join(id, size, rank) on
//     each thread after cudaSetDevice. join blocks until every rank has joined, so the threads must run concurrently.
// Sub-communicators for expert and data parallelism are ncclCommSplit's of the world (split(); ep_dp_comms()).
//
// Collectives are enqueued on the caller's stream and return at once (no host synchronisation). Supported element
// types: float (ncclFloat32), bf16 (ncclBfloat16), int32_t (ncclInt32).
#pragma once

#include <nccl.h>

#include <cstddef>
#include <cstdint>

#include "ops/cuda/cuda_check.h"
#include "parallel/topology.h"

namespace moetune::parallel {

// The CUDA device this process drives, made current: local_rank when the process sees the node's GPUs, device 0 when
// it sees exactly one (per-task binding: srun --gpus-per-task 1 gives each task its own CUDA_VISIBLE_DEVICES). Throws
// moetune::Error when local_rank is not below the number of visible devices (more processes than GPUs on a node).
int select_cuda_device(const ProcessGroupInfo& group);

class NcclComm {
 public:
  NcclComm() = default;  // no communicator; only moved into
  ~NcclComm();
  NcclComm(NcclComm&& other) noexcept;
  NcclComm& operator=(NcclComm&& other) noexcept;
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  // A fresh id; this process hosts the bootstrap root until every rank has joined. Once NCCL_COMM_ID is set (world()
  // sets it), NCCL returns the id of that address instead, so in-process communicators belong to runs without world().
  static ncclUniqueId unique_id();
  // Joins a communicator of `size` ranks as `rank`, on the current CUDA device. Collective: blocks until all joined.
  static NcclComm join(const ncclUniqueId& id, int size, int rank);
  // The world communicator of a launched run (see the file comment). Makes select_cuda_device(group) current first.
  static NcclComm world(const ProcessGroupInfo& group);

  // ncclCommSplit: ranks passing the same color form one communicator, ordered by key (ties by rank here). Collective
  // over this communicator: every rank must call it, in the same order relative to other collectives.
  NcclComm split(int color, int key) const;

  ncclComm_t get() const { return comm_; }
  int rank() const { return rank_; }
  int size() const { return size_; }
  int device() const { return device_; }

  // Stops every operation of this communicator in flight (its kernels return, peers' collectives fail or hang until
  // they abort too) and frees it. For error paths: a rank that failed mid-exchange aborts so as not to block its peers.
  void abort();

  // recv (count) = op over ranks of send (count). In place when send == recv.
  template <class T>
  void all_reduce(const T* send, T* recv, size_t count, ncclRedOp_t op, cudaStream_t stream) const;
  // recv (recv_count) = op over ranks of send[rank*recv_count, (rank+1)*recv_count); send (size * recv_count). In
  // place when recv == send + rank * recv_count.
  template <class T>
  void reduce_scatter(const T* send, T* recv, size_t recv_count, ncclRedOp_t op, cudaStream_t stream) const;
  // recv (size * send_count): rank r's send lands at recv[r*send_count, (r+1)*send_count). In place when
  // send == recv + rank * send_count.
  template <class T>
  void all_gather(const T* send, T* recv, size_t send_count, cudaStream_t stream) const;

 private:
  NcclComm(ncclComm_t comm, int device);
  void destroy();

  ncclComm_t comm_ = nullptr;
  int rank_ = 0, size_ = 0, device_ = -1;
};

// The world and its two splits for an EP x DP layout (topology.h): ep = the ranks exchanging tokens with this one
// (color dp_rank, key ep_rank: ep.rank() == layout.ep_rank(rank)), dp = the ranks holding the same experts (color
// ep_rank, key dp_rank). Collective over the world.
struct EpDpComms {
  NcclComm world, ep, dp;
};
EpDpComms ep_dp_comms(NcclComm world, const ParallelLayout& layout);

}  // namespace moetune::parallel
