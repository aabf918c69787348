// Why: ZeRO-1 splits the optimizer step of data-parallel training over the ranks that hold the same parameters: each
// rank keeps the AdamW moments (and recipe (b)'s fp32 master weights) of its shard only, steps that shard with the
// reduced gradients, and the updated bf16 parameters are all-gathered, so optimizer memory per GPU falls as 1/P. Which
// rank owns which elements must be the same on every rank and on every resume, so it is a pure function of the layout
// and the group sizes, here, tested on the CPU (tests/parallel/test_zero_layout.cpp).
//
// The trainer's arenas are in ParamLayout order, unpadded, and the fused optimizer step reduces and steps one gradient
// group (a layer, the head, the embedding) at a time. So the cut is made per group, in place, with no padding or
// staging copy:
//   segment  the parameters of one gradient group that are consecutive in the layout and shared by the same ranks:
//            routed-expert weights by the expert replicas (the DP group), everything else by the world. Layout range
//            [start, end) (alignment gaps between its parameters included; they hold zeros). A sparse layer has two
//            or three: attention, norms and router; the experts; the shared expert if any.
//   body     [start, start + P*shard), shard = (end - start) / P rounded down to kZeroAlign elements: NCCL's
//            reduce-scatter and all-gather (equal counts per rank) run on it in place. Rank r owns
//            [start + r*shard, start + (r+1)*shard). (A ShardLayout of P*shard elements that needs no padding.)
//   tail     [start + P*shard, end), fewer than P*kZeroAlign elements (none when the size divides, as for most real
//            widths): all-reduced and stepped by every rank alike (as without ZeRO), its state kept on every rank; its
//            squared norm is counted by the segment's rank 0 only, so the global norm counts every element once.
// A segment shared by one rank only (P = 1: the experts of a run without data parallelism) is all body, no tail.
//
// This rank's state arena (one per moment, and the masters) holds, segment by segment in layout order, its body shard
// then the tail, each part starting at a multiple of kZeroAlign (16-byte aligned for the vectorized AdamW kernels).
// Each part carries its AdamW spans: the pieces of its parameters inside it, with their weight-decay flag.
#pragma once

#include <cstddef>
#include <vector>

#include "parallel/shard_layout.h"

namespace moetune::parallel {

inline constexpr size_t kZeroAlign = 64;  // elements: shard and state boundaries (128 bytes of bf16)

// One parameter, as the sharding sees it.
struct ZeroParam {
  size_t offset = 0, numel = 0;  // in the layout
  bool decay = false;            // AdamW weight decay
  int group = 0;                 // gradient group (GpuTrainer: layer, head, embedding)
  bool expert = false;           // routed-expert weight: shared by the expert replicas, else by the world
};

// Elements [offset, offset + count) of a part, relative to its begin.
struct ZeroSpan {
  size_t offset = 0, count = 0;
  bool decay = false;
};

// A layout range this rank steps, and where its state lives.
struct ZeroPart {
  size_t begin = 0, end = 0;    // layout range (may be empty)
  size_t state = 0;             // offset of element `begin` in this rank's state arena
  std::vector<ZeroSpan> spans;  // the parameters' pieces in [begin, end), ascending, relative to begin
  size_t count() const { return end - begin; }
};

struct ZeroSegment {
  int group = 0;
  bool expert = false;
  size_t start = 0, end = 0;  // layout range
  int ranks = 1, rank = 0;    // the ranks sharing it (world or expert replicas) and this rank's index among them
  size_t shard = 0;           // body elements per rank
  ZeroPart own;               // [start + rank*shard, start + (rank+1)*shard)
  ZeroPart tail;              // [start + ranks*shard, end), stepped by every rank
  size_t body() const { return shard * static_cast<size_t>(ranks); }
  // The body as an arena of its own (parallel/shard_layout.h, no padding): for gpu/gradient_sync.h's collectives.
  ShardLayout body_layout() const { return {body(), ranks, shard}; }
  size_t shard_begin(int r) const { return start + shard * static_cast<size_t>(r); }
  bool counts_tail() const { return rank == 0; }  // the tail's squared norm is this rank's to count
};

struct ZeroLayout {
  std::vector<ZeroSegment> segments;  // layout order
  size_t state_elements = 0;          // this rank's state arena, per moment
};

// params: ascending offsets, disjoint (ParamLayout order). world_size/world_rank: the ranks sharing replicated
// parameters; replica_size/replica_rank: those sharing this rank's experts. Throws moetune::Error on unsorted or
// overlapping parameters, or a rank outside its group.
ZeroLayout zero_layout(const std::vector<ZeroParam>& params, int world_size, int world_rank, int replica_size,
                       int replica_rank);

}  // namespace moetune::parallel
