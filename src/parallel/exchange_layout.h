// Why: the NCCL dispatch of expert parallelism (gpu/expert_exchange.h) moves rows between ranks by counts that every
// rank must agree on, then reorders what arrived; one wrong offset sends a row to the wrong expert and still yields
// plausible numbers. So the arithmetic lives here, on the host, as a pure function of the per-rank expert offsets,
// tested on the CPU against the oracle (parallel/ep_reference.h); the GPU only copies rows by it.
//
// Terms. An EP group of P ranks, E routed experts, L = E / P local experts per rank: rank r owns global experts
// [r*L, (r+1)*L) (ParallelLayout's contiguous placement). Each rank s has sorted its own rows (token, slot pairs) by
// GLOBAL expert, as cuda::moe_build_routing does: offsets_s (E + 1), expert e's rows at [offsets_s[e], offsets_s[e+1]).
// Because owners hold contiguous expert blocks, the rows rank s sends to rank d are ONE contiguous run of its buffer,
// [offsets_s[d*L], offsets_s[(d+1)*L]), already sorted by d's local expert: the send side needs no packing.
//
// Receive side of rank d, two orders:
//   staging (grouped by source): the chunks of ranks 0..P-1 back to back, as the all-to-all delivers them;
//   expert-major (the grouped GEMM's input): by local expert l, then source rank s, then the source's order (token,
//     slot) — exactly ep_reference's receive order, so rows here match EpPlan::recv[d] row for row.
// Segment (l, s) = the rows of local expert l from source s; it starts at segment_start[l*P + s] in expert-major order
// and at segment_source[l*P + s] in staging order. exchange_staging_row maps one to the other.
#pragma once

#include <cstdint>
#include <vector>

#if defined(__CUDACC__)
#define MOETUNE_HOST_DEVICE __host__ __device__
#else
#define MOETUNE_HOST_DEVICE
#endif

namespace moetune::parallel {

// What one rank sends and receives in one exchange (one MoE layer), from every rank's offsets.
struct ExchangeLayout {
  int ranks = 0, experts = 0, rank = 0, local_experts = 0;  // P, E, this rank, L = E / P
  std::vector<int32_t> send_offset;     // (P) first row of this rank's expert-sorted buffer going to rank p
  std::vector<int32_t> send_count;      // (P) rows going to rank p (send_count[rank]: kept, copied locally)
  std::vector<int32_t> recv_offset;     // (P) first staging row from source rank s
  std::vector<int32_t> recv_count;      // (P) rows from source rank s
  std::vector<int32_t> segment_start;   // (L*P + 1) expert-major row where segment (l, s) begins; last = recv_rows
  std::vector<int32_t> segment_source;  // (L*P) staging row where segment (l, s) begins
  std::vector<int32_t> local_offsets;   // (L + 1) expert-major rows of local expert l: [local_offsets[l], [l+1])
  int32_t send_rows = 0;                // rows of this rank's own expert-sorted buffer (offsets[E])
  int32_t recv_rows = 0;                // rows this rank's experts receive (sum of recv_count)

  int segments() const { return local_experts * ranks; }
};

// The layout of `rank` from offsets_table (P, E + 1): row s = rank s's global-expert offsets. Throws moetune::Error
// naming the rank and expert for offsets that do not start at 0 or decrease, when E % P != 0, when a rank has more than
// max_send_rows rows, or when ANY rank would receive more than max_recv_rows (every rank checks every rank, so all of
// them fail together instead of leaving the others waiting in a collective).
ExchangeLayout exchange_layout(const std::vector<int32_t>& offsets_table, int ranks, int experts, int rank,
                               int64_t max_send_rows, int64_t max_recv_rows);

// Rows each rank receives (P), from the same table: recv_rows of every rank's layout.
std::vector<int64_t> exchange_recv_rows(const std::vector<int32_t>& offsets_table, int ranks, int experts);

// The staging row of expert-major row `row` (0 <= row < recv_rows): the segment holding it (the last segment starting
// at or before it; empty segments start where the next one does and are skipped), then the same distance into that
// segment's staging run. segment_start holds `segments` + 1 entries. Shared by the host tests and the GPU permute.
MOETUNE_HOST_DEVICE inline int32_t exchange_staging_row(const int32_t* segment_start, const int32_t* segment_source,
                                                        int segments, int32_t row) {
  int lo = 0, hi = segments;  // first index in [0, segments) with segment_start > row, by bisection
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (segment_start[mid] <= row) lo = mid + 1;
    else hi = mid;
  }
  const int segment = lo - 1;
  return segment_source[segment] + (row - segment_start[segment]);
}

}  // namespace moetune::parallel
