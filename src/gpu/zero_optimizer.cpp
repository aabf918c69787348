// Why: see zero_optimizer.h. The collectives are gpu/gradient_sync.h's on each segment's body (a ShardLayout without
// padding) and an all-reduce of its tail; the state gathers for checkpoints move bounded pieces, so their device
// memory stays small whatever the segment size.
#include "gpu/zero_optimizer.h"

#include <algorithm>
#include <utility>

#include "core/error.h"
#include "gpu/elementwise.h"
#include "gpu/gradient_sync.h"

namespace moetune::cuda {

namespace {

// Elements per rank moved by one all-gather of a checkpoint gather (16 MB of bf16, 32 MB of fp32).
constexpr size_t kGatherPieceElements = size_t{8} << 20;

AdamWPlan plan_of(const parallel::ZeroPart& part) {
  std::vector<AdamWSpan> spans;
  for (const parallel::ZeroSpan& span : part.spans) spans.push_back({span.offset, span.count, span.decay});
  return AdamWPlan(spans, part.count());
}

float widen(float x) { return x; }
float widen(bf16 x) { return __bfloat162float(x); }
template <class T>
T narrow(float x);
template <>
float narrow<float>(float x) { return x; }
template <>
bf16 narrow<bf16>(float x) { return __float2bfloat16(x); }  // round to nearest even

}  // namespace

ZeroOptimizer::ZeroOptimizer(const std::vector<parallel::ZeroParam>& params, bool mixed,
                             const parallel::NcclComm& world, const parallel::NcclComm* replicas)
    : layout_(parallel::zero_layout(params, world.size(), world.rank(), replicas ? replicas->size() : 1,
                                    replicas ? replicas->rank() : 0)),
      mixed_(mixed), world_(world), replicas_(replicas) {
  for (const parallel::ZeroSegment& segment : layout_.segments)
    plans_.push_back({plan_of(segment.own), plan_of(segment.tail)});
  const size_t n = layout_.state_elements;
  if (mixed_) {
    master_ = DeviceBuffer<float>(n);
    m32_ = DeviceBuffer<float>(n);
    v32_ = DeviceBuffer<float>(n);
    master_.zero();
    m32_.zero();
    v32_.zero();
  } else {
    m16_ = DeviceBuffer<bf16>(n);
    v16_ = DeviceBuffer<bf16>(n);
    m16_.zero();
    v16_.zero();
  }
  norm_parts_ = DeviceBuffer<float>(2 * layout_.segments.size());
  norm_scratch_ = DeviceBuffer<float>(grad_norm_scratch_floats());
}

size_t ZeroOptimizer::optimizer_bytes() const {
  return (m16_.size() + v16_.size()) * sizeof(bf16) + (m32_.size() + v32_.size()) * sizeof(float);
}

size_t ZeroOptimizer::master_bytes() const { return master_.size() * sizeof(float); }

const parallel::NcclComm& ZeroOptimizer::comm_of(const parallel::ZeroSegment& segment) const {
  if (!segment.expert) return world_;
  MT_ASSERT(replicas_ != nullptr);  // else the segment has one rank and no collective
  return *replicas_;
}

bool ZeroOptimizer::inside(const parallel::ZeroSegment& segment, size_t from, size_t to) const {
  return segment.start >= from && segment.end <= to;
}

void ZeroOptimizer::set_masters(const bf16* params, cudaStream_t stream) {
  if (!mixed_) return;
  for (const parallel::ZeroSegment& s : layout_.segments)
    for (const parallel::ZeroPart* part : {&s.own, &s.tail})
      if (part->count() > 0) convert_bf16_to_f32(master_.data() + part->state, params + part->begin, part->count(), stream);
}

void ZeroOptimizer::set_masters(const float* host_params) {
  if (mixed_) master_.upload(parts_of<float>(host_params));
}

void ZeroOptimizer::reduce_scatter(bf16* grads, size_t from, size_t to, cudaStream_t stream) const {
  for (const parallel::ZeroSegment& s : layout_.segments) {
    if (!inside(s, from, to) || s.ranks == 1) continue;
    const parallel::NcclComm& comm = comm_of(s);
    bf16* segment = grads + (s.start - from);
    reduce_scatter_sum(comm, segment, s.body_layout(), stream);
    if (s.tail.count() > 0) comm.all_reduce(segment + s.body(), segment + s.body(), s.tail.count(), ncclSum, stream);
  }
}

void ZeroOptimizer::update(bf16* params, const bf16* grads, size_t from, size_t to, const AdamWHyper& hyper,
                           float grad_scale, cudaStream_t stream) {
  for (size_t i = 0; i < layout_.segments.size(); ++i) {
    const parallel::ZeroSegment& s = layout_.segments[i];
    if (!inside(s, from, to)) continue;
    for (const auto& [part, plan] : {std::pair{&s.own, &plans_[i].own}, std::pair{&s.tail, &plans_[i].tail}}) {
      if (part->count() == 0) continue;
      bf16* p = params + part->begin;
      const bf16* g = grads + (part->begin - from);
      if (mixed_)
        adamw_master(p, master_.data() + part->state, g, m32_.data() + part->state, v32_.data() + part->state, *plan,
                     hyper, grad_scale, stream);
      else
        adamw_bf16(p, g, m16_.data() + part->state, v16_.data() + part->state, *plan, hyper, grad_scale, stream);
    }
  }
}

void ZeroOptimizer::all_gather(bf16* params, size_t from, size_t to, cudaStream_t stream) const {
  for (const parallel::ZeroSegment& s : layout_.segments)
    if (inside(s, from, to) && s.ranks > 1) all_gather_shards(comm_of(s), params + s.start, s.body_layout(), stream);
}

double ZeroOptimizer::grad_norm_squared_share(const bf16* grads, cudaStream_t stream) {
  size_t parts = 0;
  for (const parallel::ZeroSegment& s : layout_.segments) {
    if (s.own.count() > 0)
      grad_norm_squared(grads + s.own.begin, s.own.count(), norm_parts_.data() + parts++, norm_scratch_.data(), stream);
    if (s.counts_tail() && s.tail.count() > 0)
      grad_norm_squared(grads + s.tail.begin, s.tail.count(), norm_parts_.data() + parts++, norm_scratch_.data(),
                        stream);
  }
  std::vector<float> host(parts);
  if (parts > 0)
    CUDA_CHECK(cudaMemcpyAsync(host.data(), norm_parts_.data(), parts * sizeof(float), cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  double sum = 0.0;
  for (float part : host) sum += part;
  return sum;
}

template <class T>
std::vector<T> ZeroOptimizer::parts_of(const float* full) const {
  std::vector<T> out(layout_.state_elements, narrow<T>(0.0f));
  for (const parallel::ZeroSegment& s : layout_.segments)
    for (const parallel::ZeroPart* part : {&s.own, &s.tail})
      for (size_t i = 0; i < part->count(); ++i) out[part->state + i] = narrow<T>(full[part->begin + i]);
  return out;
}

template <class T>
std::vector<float> ZeroOptimizer::gather_state(const T* state, size_t layout_size, bool keep,
                                               cudaStream_t stream) const {
  CUDA_CHECK(cudaStreamSynchronize(stream));  // the state as the last step left it
  std::vector<float> full(keep ? layout_size : 0, 0.0f);
  std::vector<T> local(keep ? layout_.state_elements : 0);
  if (keep && !local.empty())
    CUDA_CHECK(cudaMemcpy(local.data(), state, local.size() * sizeof(T), cudaMemcpyDeviceToHost));
  size_t piece = 0, gathered = 0;  // elements per rank of one all-gather; the most of its receive buffer
  for (const parallel::ZeroSegment& s : layout_.segments) {
    if (s.ranks == 1 || s.shard == 0) continue;
    piece = std::max(piece, std::min(s.shard, kGatherPieceElements));
    gathered = std::max(gathered, std::min(s.shard, kGatherPieceElements) * static_cast<size_t>(s.ranks));
  }
  DeviceBuffer<T> recv(gathered);        // (ranks, piece) every rank's piece
  std::vector<T> host(keep ? gathered : 0);
  for (const parallel::ZeroSegment& s : layout_.segments) {
    // Parts held here: the tail, and the body of a segment this rank alone holds.
    for (const parallel::ZeroPart* part : {&s.own, &s.tail}) {
      if (!keep || (part == &s.own && s.ranks > 1)) continue;
      for (size_t i = 0; i < part->count(); ++i) full[part->begin + i] = widen(local[part->state + i]);
    }
    if (s.ranks == 1 || s.shard == 0) continue;
    const parallel::NcclComm& comm = comm_of(s);
    for (size_t offset = 0; offset < s.shard; offset += piece) {
      const size_t count = std::min(piece, s.shard - offset);
      comm.all_gather(state + s.own.state + offset, recv.data(), count, stream);
      if (!keep) continue;
      CUDA_CHECK(cudaMemcpyAsync(host.data(), recv.data(), count * static_cast<size_t>(s.ranks) * sizeof(T),
                                 cudaMemcpyDeviceToHost, stream));
      CUDA_CHECK(cudaStreamSynchronize(stream));
      for (int r = 0; r < s.ranks; ++r)
        for (size_t i = 0; i < count; ++i)
          full[s.shard_begin(r) + offset + i] = widen(host[static_cast<size_t>(r) * count + i]);
    }
  }
  CUDA_CHECK(cudaStreamSynchronize(stream));  // before `recv` is freed
  return full;
}

void ZeroOptimizer::export_moments(size_t layout_size, std::vector<float>& exp_avg, std::vector<float>& exp_avg_sq,
                                   bool keep, cudaStream_t stream) const {
  if (mixed_) {
    exp_avg = gather_state(m32_.data(), layout_size, keep, stream);
    exp_avg_sq = gather_state(v32_.data(), layout_size, keep, stream);
  } else {
    exp_avg = gather_state(m16_.data(), layout_size, keep, stream);
    exp_avg_sq = gather_state(v16_.data(), layout_size, keep, stream);
  }
}

std::vector<float> ZeroOptimizer::download_masters(size_t layout_size, bool keep, cudaStream_t stream) const {
  MT_ASSERT(mixed_);
  return gather_state(master_.data(), layout_size, keep, stream);
}

void ZeroOptimizer::import_moments(const std::vector<float>& exp_avg, const std::vector<float>& exp_avg_sq) {
  if (mixed_) {
    m32_.upload(parts_of<float>(exp_avg.data()));
    v32_.upload(parts_of<float>(exp_avg_sq.data()));
  } else {
    m16_.upload(parts_of<bf16>(exp_avg.data()));
    v16_.upload(parts_of<bf16>(exp_avg_sq.data()));
  }
}

}  // namespace moetune::cuda
