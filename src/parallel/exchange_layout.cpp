// Why: see exchange_layout.h. Validation comes first and covers every rank's offsets, because a rank that trusted a
// bad count would post a send its peer never matches, and NCCL would hang instead of failing.
#include "parallel/exchange_layout.h"

#include "core/error.h"

namespace moetune::parallel {

namespace {

void check_table(const std::vector<int32_t>& table, int ranks, int experts, int64_t max_send_rows) {
  if (ranks < 1 || experts < 1 || experts % ranks != 0)
    fail("expert exchange: ", experts, " experts do not split evenly over ", ranks, " ranks");
  const size_t width = static_cast<size_t>(experts) + 1;
  if (table.size() != width * ranks)
    fail("expert exchange: offsets table of ", table.size(), " values, expected ", ranks, " ranks x ", width);
  for (int s = 0; s < ranks; ++s) {
    const int32_t* offsets = &table[width * s];
    if (offsets[0] != 0) fail("expert exchange: rank ", s, " offsets start at ", offsets[0], ", not 0");
    for (int e = 0; e < experts; ++e)
      if (offsets[e + 1] < offsets[e])
        fail("expert exchange: rank ", s, " offsets decrease at expert ", e, " (", offsets[e], " then ",
             offsets[e + 1], ")");
    if (offsets[experts] > max_send_rows)
      fail("expert exchange: rank ", s, " has ", offsets[experts], " rows, more than the ", max_send_rows,
           " the exchange was sized for");
  }
}

}  // namespace

std::vector<int64_t> exchange_recv_rows(const std::vector<int32_t>& offsets_table, int ranks, int experts) {
  const size_t width = static_cast<size_t>(experts) + 1;
  const int L = experts / ranks;
  std::vector<int64_t> rows(ranks, 0);
  for (int s = 0; s < ranks; ++s)
    for (int d = 0; d < ranks; ++d)
      rows[d] += offsets_table[width * s + static_cast<size_t>(d + 1) * L] - offsets_table[width * s + static_cast<size_t>(d) * L];
  return rows;
}

ExchangeLayout exchange_layout(const std::vector<int32_t>& offsets_table, int ranks, int experts, int rank,
                               int64_t max_send_rows, int64_t max_recv_rows) {
  check_table(offsets_table, ranks, experts, max_send_rows);
  if (rank < 0 || rank >= ranks) fail("expert exchange: rank ", rank, " of ", ranks);
  const std::vector<int64_t> recv_rows = exchange_recv_rows(offsets_table, ranks, experts);
  for (int d = 0; d < ranks; ++d)
    if (recv_rows[d] > max_recv_rows)
      fail("expert exchange: rank ", d, " would receive ", recv_rows[d], " rows, more than its capacity of ",
           max_recv_rows, " (max_recv_rows)");

  const size_t width = static_cast<size_t>(experts) + 1;
  const int P = ranks, L = experts / ranks;
  auto offset = [&](int s, int e) { return offsets_table[width * s + e]; };  // rank s's offsets[e]

  ExchangeLayout layout;
  layout.ranks = P;
  layout.experts = experts;
  layout.rank = rank;
  layout.local_experts = L;
  layout.send_offset.resize(P);
  layout.send_count.resize(P);
  layout.recv_offset.resize(P);
  layout.recv_count.resize(P);
  for (int p = 0; p < P; ++p) {
    layout.send_offset[p] = offset(rank, p * L);
    layout.send_count[p] = offset(rank, (p + 1) * L) - offset(rank, p * L);
  }
  layout.send_rows = offset(rank, experts);
  int32_t staged = 0;
  for (int s = 0; s < P; ++s) {
    layout.recv_offset[s] = staged;
    layout.recv_count[s] = offset(s, (rank + 1) * L) - offset(s, rank * L);
    staged += layout.recv_count[s];
  }
  layout.recv_rows = staged;

  layout.segment_start.resize(static_cast<size_t>(L) * P + 1);
  layout.segment_source.resize(static_cast<size_t>(L) * P);
  layout.local_offsets.resize(L + 1);
  int32_t row = 0;
  for (int l = 0; l < L; ++l) {
    layout.local_offsets[l] = row;
    const int e = rank * L + l;  // the global expert
    for (int s = 0; s < P; ++s) {
      const size_t segment = static_cast<size_t>(l) * P + s;
      layout.segment_start[segment] = row;
      layout.segment_source[segment] = layout.recv_offset[s] + (offset(s, e) - offset(s, rank * L));
      row += offset(s, e + 1) - offset(s, e);
    }
  }
  layout.local_offsets[L] = row;
  layout.segment_start[static_cast<size_t>(L) * P] = row;
  MT_ASSERT(row == layout.recv_rows);
  return layout;
}

}  // namespace moetune::parallel
