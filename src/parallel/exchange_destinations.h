// Why: the NVLink expert exchange (gpu/expert_exchange.h, ExchangeBackend::NvlinkDirect) has no staging buffer: each
// rank writes every one of its sorted rows straight into its final expert-major row on the owning rank, and reads the
// result back from there. So each rank must know, for each of its rows, the owner and the owner's row index; one wrong
// base sends a row to the wrong expert and still yields plausible numbers. The arithmetic lives here, on the host,
// derived from exchange_layout (parallel/exchange_layout.h: every rank's segment starts) and tested on the CPU against
// the oracle (parallel/ep_reference.h); the GPU only evaluates exchange_destination_row per row.
//
// Terms as in exchange_layout.h: P ranks, E global experts, L = E / P local experts, rank d owns [d*L, (d+1)*L); rank
// s's rows are sorted by global expert, offsets_s (E + 1). Rank s's row i of expert e (offsets_s[e] <= i <
// offsets_s[e+1]) belongs to segment (l = e % L, s) on rank d = e / L, which begins at d's expert-major row
// segment_start_d[l*P + s] and holds s's rows of e in s's order. So its row there is
//   segment_start_d[l*P + s] + (i - offsets_s[e]) = base_s[e] + i,  base_s[e] = segment_start_d[l*P + s] - offsets_s[e].
#pragma once

#include <cstdint>
#include <vector>

#include "parallel/exchange_layout.h"

namespace moetune::parallel {

// base_s (E) of `rank` from offsets_table (P, E + 1), checked as exchange_layout checks it (same errors).
std::vector<int32_t> exchange_destination_base(const std::vector<int32_t>& offsets_table, int ranks, int experts,
                                               int rank, int64_t max_send_rows, int64_t max_recv_rows);

// Where this rank's sorted row `row` (0 <= row < offsets[experts]) goes: returns the owner's expert-major row and sets
// *owner. The expert is the last one whose rows start at or before `row` (empty experts start where the next one does
// and are skipped), by bisection over offsets (E + 1). Shared by the host tests and the GPU kernel.
MOETUNE_HOST_DEVICE inline int32_t exchange_destination_row(const int32_t* offsets, const int32_t* base, int experts,
                                                            int local_experts, int32_t row, int* owner) {
  int lo = 0, hi = experts;  // first index in [0, experts) with offsets > row, by bisection
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (offsets[mid] <= row) lo = mid + 1;
    else hi = mid;
  }
  const int expert = lo - 1;
  *owner = expert / local_experts;
  return base[expert] + row;
}

}  // namespace moetune::parallel
