// Why: see exchange_destinations.h. Every owner's layout is computed with the same exchange_layout the NCCL backend
// uses, so both backends agree on the expert-major order by construction.
#include "parallel/exchange_destinations.h"

#include <cstddef>

namespace moetune::parallel {

std::vector<int32_t> exchange_destination_base(const std::vector<int32_t>& offsets_table, int ranks, int experts,
                                               int rank, int64_t max_send_rows, int64_t max_recv_rows) {
  const ExchangeLayout mine = exchange_layout(offsets_table, ranks, experts, rank, max_send_rows, max_recv_rows);
  const int P = ranks, L = mine.local_experts;
  const size_t width = static_cast<size_t>(experts) + 1;
  std::vector<int32_t> base(experts);
  for (int d = 0; d < P; ++d) {
    const ExchangeLayout owner =
        d == rank ? mine : exchange_layout(offsets_table, ranks, experts, d, max_send_rows, max_recv_rows);
    for (int l = 0; l < L; ++l) {
      const int e = d * L + l;
      base[e] = owner.segment_start[static_cast<size_t>(l) * P + rank] - offsets_table[width * rank + e];
    }
  }
  return base;
}

}  // namespace moetune::parallel
