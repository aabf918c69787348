// Why: see ep_reference.h. Counting sorts over (destination, local expert, source) keyed counts; every loop walks
// tokens and slots in ascending order, which is what makes the documented order hold.
#include "parallel/ep_reference.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "core/error.h"

namespace moetune::parallel {

ExpertMap ExpertMap::contiguous(int experts, int ranks) {
  if (ranks < 1 || experts < 0 || experts % ranks != 0)
    fail("expert map: ", experts, " experts do not split evenly over ", ranks, " ranks");
  std::vector<int32_t> owner(experts);
  const int per = experts / ranks;
  for (int e = 0; e < experts; ++e) owner[e] = e / per;
  return from_owner(std::move(owner), ranks);
}

ExpertMap ExpertMap::from_owner(std::vector<int32_t> owner, int ranks) {
  if (ranks < 1) fail("expert map: ", ranks, " ranks");
  ExpertMap map;
  map.experts = static_cast<int>(owner.size());
  map.ranks = ranks;
  map.owned.assign(ranks, {});
  map.local_index.assign(owner.size(), 0);
  for (int e = 0; e < map.experts; ++e) {
    if (owner[e] < 0 || owner[e] >= ranks) fail("expert map: expert ", e, " is owned by rank ", owner[e], " of ", ranks);
    map.local_index[e] = static_cast<int32_t>(map.owned[owner[e]].size());
    map.owned[owner[e]].push_back(e);
  }
  map.owner = std::move(owner);
  return map;
}

EpPlan ep_plan(const std::vector<EpRouting>& routing, const ExpertMap& map, int top_k) {
  const int W = map.ranks;
  if (static_cast<int>(routing.size()) != W) fail("ep_plan: routing of ", routing.size(), " ranks for a map of ", W);
  if (top_k < 1) fail("ep_plan: top_k ", top_k);
  for (int s = 0; s < W; ++s) {
    const EpRouting& r = routing[s];
    const size_t pairs = static_cast<size_t>(r.tokens) * top_k;
    if (r.tokens < 0 || r.top_index.size() != pairs || r.top_weight.size() != pairs)
      fail("ep_plan: rank ", s, " has ", r.tokens, " tokens x top_k ", top_k, " but top_index holds ",
           r.top_index.size(), " and top_weight ", r.top_weight.size(), " values");
    for (size_t i = 0; i < pairs; ++i)
      if (r.top_index[i] < 0 || r.top_index[i] >= map.experts)
        fail("ep_plan: rank ", s, " token ", i / top_k, " slot ", i % top_k, " routes to expert ", r.top_index[i],
             " of ", map.experts);
  }

  EpPlan plan;
  plan.ranks = W;
  plan.top_k = top_k;
  plan.send_counts.assign(static_cast<size_t>(W) * W, 0);
  plan.send_token_counts.assign(static_cast<size_t>(W) * W, 0);
  plan.expert_counts.assign(map.experts, 0);
  plan.send.resize(W);
  plan.recv.resize(W);

  // counts[d][l * W + s]: rows of rank d's local expert l coming from rank s.
  for (int d = 0; d < W; ++d) plan.recv[d].counts.assign(static_cast<size_t>(map.local_experts(d)) * W, 0);
  for (int s = 0; s < W; ++s)
    for (const int32_t e : routing[s].top_index) {
      const int d = map.owner[e];
      ++plan.recv[d].counts[static_cast<size_t>(map.local_index[e]) * W + s];
      ++plan.send_counts[static_cast<size_t>(s) * W + d];
      ++plan.expert_counts[e];
    }

  // Receive side: expert offsets, and where each (local expert, source) run begins.
  std::vector<std::vector<int32_t>> recv_cursor(W);  // [d][l * W + s]
  for (int d = 0; d < W; ++d) {
    EpRecvLayout& recv = plan.recv[d];
    const int L = map.local_experts(d);
    recv.expert_offsets.assign(L + 1, 0);
    recv_cursor[d].assign(static_cast<size_t>(L) * W, 0);
    int32_t row = 0;
    for (int l = 0; l < L; ++l) {
      recv.expert_offsets[l] = row;
      for (int s = 0; s < W; ++s) {
        recv_cursor[d][static_cast<size_t>(l) * W + s] = row;
        row += recv.counts[static_cast<size_t>(l) * W + s];
      }
    }
    recv.expert_offsets[L] = row;
    recv.src_rank.assign(row, -1);
    recv.src_token.assign(row, -1);
    recv.src_slot.assign(row, -1);
    recv.weight.assign(row, 0.0f);
  }

  for (int s = 0; s < W; ++s) {
    const EpRouting& r = routing[s];
    EpSendPlan& send = plan.send[s];
    // Send side: destination chunks in rank order, each sorted by local expert; chunk_cursor[d][l] is the next row of
    // local expert l within rank d's chunk.
    send.dest_offsets.assign(W + 1, 0);
    for (int d = 0; d < W; ++d)
      send.dest_offsets[d + 1] =
          send.dest_offsets[d] + static_cast<int32_t>(plan.send_counts[static_cast<size_t>(s) * W + d]);
    std::vector<std::vector<int32_t>> chunk_cursor(W);
    for (int d = 0; d < W; ++d) {
      int32_t row = send.dest_offsets[d];
      for (int l = 0; l < map.local_experts(d); ++l) {
        chunk_cursor[d].push_back(row);
        row += plan.recv[d].counts[static_cast<size_t>(l) * W + s];
      }
    }
    const int32_t rows = send.dest_offsets[W];
    send.send_token.assign(rows, -1);
    send.send_slot.assign(rows, -1);
    send.dest_rank.assign(static_cast<size_t>(r.tokens) * top_k, -1);
    send.dest_row.assign(static_cast<size_t>(r.tokens) * top_k, -1);
    send.tokens_to_rank.assign(W, 0);
    std::vector<int> seen(W, -1);  // the last token counted for each destination
    for (int t = 0; t < r.tokens; ++t)
      for (int j = 0; j < top_k; ++j) {
        const size_t pair = static_cast<size_t>(t) * top_k + j;
        const int32_t e = r.top_index[pair];
        const int d = map.owner[e], l = map.local_index[e];
        const int32_t send_row = chunk_cursor[d][l]++;
        send.send_token[send_row] = t;
        send.send_slot[send_row] = j;
        const int32_t recv_row = recv_cursor[d][static_cast<size_t>(l) * W + s]++;
        EpRecvLayout& recv = plan.recv[d];
        recv.src_rank[recv_row] = s;
        recv.src_token[recv_row] = t;
        recv.src_slot[recv_row] = j;
        recv.weight[recv_row] = r.top_weight[pair];
        send.dest_rank[pair] = d;
        send.dest_row[pair] = recv_row;
        if (seen[d] != t) {
          seen[d] = t;
          ++send.tokens_to_rank[d];
          ++plan.send_token_counts[static_cast<size_t>(s) * W + d];
        }
      }
  }
  return plan;
}

namespace {

void check_rows(const char* what, int rank, size_t have, size_t rows, int hidden) {
  if (have != rows * static_cast<size_t>(hidden))
    fail(what, ": rank ", rank, " holds ", have, " values, expected ", rows, " rows x ", hidden);
}

void copy_row(float* dest, const float* src, int hidden) { std::memcpy(dest, src, sizeof(float) * hidden); }

}  // namespace

std::vector<std::vector<float>> ep_dispatch(const EpPlan& plan, const std::vector<std::vector<float>>& x, int hidden) {
  const int W = plan.ranks;
  if (static_cast<int>(x.size()) != W) fail("ep_dispatch: inputs of ", x.size(), " ranks for a plan of ", W);
  for (int s = 0; s < W; ++s)
    check_rows("ep_dispatch", s, x[s].size(), plan.send[s].dest_row.size() / plan.top_k, hidden);
  std::vector<std::vector<float>> received(W);
  for (int d = 0; d < W; ++d) {
    const EpRecvLayout& recv = plan.recv[d];
    received[d].resize(static_cast<size_t>(recv.rows()) * hidden);
    for (int r = 0; r < recv.rows(); ++r)
      copy_row(&received[d][static_cast<size_t>(r) * hidden],
               &x[recv.src_rank[r]][static_cast<size_t>(recv.src_token[r]) * hidden], hidden);
  }
  return received;
}

std::vector<float> ep_pack_send(const EpPlan& plan, int rank, const std::vector<float>& x, int hidden) {
  const EpSendPlan& send = plan.send[rank];
  check_rows("ep_pack_send", rank, x.size(), send.dest_row.size() / plan.top_k, hidden);
  std::vector<float> buffer(send.send_token.size() * hidden);
  for (size_t i = 0; i < send.send_token.size(); ++i)
    copy_row(&buffer[i * hidden], &x[static_cast<size_t>(send.send_token[i]) * hidden], hidden);
  return buffer;
}

std::vector<float> ep_recv_from_chunks(const EpPlan& plan, int rank, const std::vector<std::vector<float>>& chunks,
                                       int hidden) {
  const int W = plan.ranks;
  const EpRecvLayout& recv = plan.recv[rank];
  if (static_cast<int>(chunks.size()) != W) fail("ep_recv_from_chunks: ", chunks.size(), " chunks for ", W, " ranks");
  for (int s = 0; s < W; ++s)
    check_rows("ep_recv_from_chunks", s, chunks[s].size(), plan.send_counts[static_cast<size_t>(s) * W + rank], hidden);
  const int L = static_cast<int>(recv.expert_offsets.size()) - 1;
  std::vector<float> buffer(static_cast<size_t>(recv.rows()) * hidden);
  std::vector<size_t> cursor(W, 0);  // next row of each chunk
  size_t row = 0;
  for (int l = 0; l < L; ++l)
    for (int s = 0; s < W; ++s)
      for (int32_t n = 0; n < recv.counts[static_cast<size_t>(l) * W + s]; ++n, ++row, ++cursor[s])
        copy_row(&buffer[row * hidden], &chunks[s][cursor[s] * hidden], hidden);
  return buffer;
}

std::vector<std::vector<float>> ep_combine(const EpPlan& plan, const std::vector<EpRouting>& routing,
                                           const std::vector<std::vector<float>>& y, int hidden) {
  const int W = plan.ranks, K = plan.top_k;
  if (static_cast<int>(y.size()) != W || static_cast<int>(routing.size()) != W)
    fail("ep_combine: ", y.size(), " expert outputs and ", routing.size(), " routings for a plan of ", W, " ranks");
  for (int d = 0; d < W; ++d) check_rows("ep_combine", d, y[d].size(), plan.recv[d].rows(), hidden);
  std::vector<std::vector<float>> out(W);
  for (int s = 0; s < W; ++s) {
    const EpRouting& r = routing[s];
    const EpSendPlan& send = plan.send[s];
    if (send.dest_row.size() != static_cast<size_t>(r.tokens) * K)
      fail("ep_combine: rank ", s, " routing has ", r.tokens, " tokens, the plan ", send.dest_row.size() / K);
    out[s].assign(static_cast<size_t>(r.tokens) * hidden, 0.0f);
    for (int t = 0; t < r.tokens; ++t) {
      float* o = &out[s][static_cast<size_t>(t) * hidden];
      for (int j = 0; j < K; ++j) {
        const size_t pair = static_cast<size_t>(t) * K + j;
        const float w = r.top_weight[pair];
        const float* row = &y[send.dest_rank[pair]][static_cast<size_t>(send.dest_row[pair]) * hidden];
        for (int h = 0; h < hidden; ++h) o[h] += w * row[h];
      }
    }
  }
  return out;
}

}  // namespace moetune::parallel
