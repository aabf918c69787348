// Why: see expert_exchange.h. The received rows are reordered by a per-row segment lookup (a bisection over the
// (L*P + 1) segment starts, which stay in L1/L2) instead of a per-row index map, so a plan uploads a few hundred
// integers per layer rather than one per row. One warp per row; 16-byte vectors when the row allows. The NVLink copy
// finds each row's owner and target the same way (a bisection over the E + 1 offsets), and keeps several 16-byte
// loads in flight per lane, since remote loads and stores have microseconds of latency.
#include "gpu/expert_exchange.h"

#include <cstdint>

#include "parallel/exchange_destinations.h"

namespace moetune::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = 8;

// kToExperts: expert_rows[o] = staging[staging_row(o)] (dst = expert rows); else staging[staging_row(o)] =
// expert_rows[o] (dst = staging). kVec = 8: uint4 copies of 8 bf16; kVec = 1: one bf16.
template <int kVec, bool kToExperts>
__global__ void permute_rows_kernel(bf16* dst, const bf16* src, const int32_t* segment_start,
                                    const int32_t* segment_source, int segments, int32_t rows, int width) {
  const int64_t global_row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  if (global_row >= rows) return;
  const int32_t row = static_cast<int32_t>(global_row);
  const int lane = threadIdx.x % kWarp;
  const int32_t staged = parallel::exchange_staging_row(segment_start, segment_source, segments, row);
  const size_t dst_row = static_cast<size_t>(kToExperts ? row : staged);
  const size_t src_row = static_cast<size_t>(kToExperts ? staged : row);
  if constexpr (kVec == 8) {
    const uint4* from = reinterpret_cast<const uint4*>(src + src_row * width);
    uint4* to = reinterpret_cast<uint4*>(dst + dst_row * width);
    for (int i = lane; i < width / 8; i += kWarp) to[i] = from[i];
  } else {
    const bf16* from = src + src_row * width;
    bf16* to = dst + dst_row * width;
    for (int i = lane; i < width; i += kWarp) to[i] = from[i];
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <bool kToExperts>
void permute_rows(bf16* dst, const bf16* src, const int32_t* segment_start, const int32_t* segment_source,
                  int segments, int32_t rows, int width, cudaStream_t stream) {
  if (rows == 0) return;
  const unsigned blocks = static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
  const dim3 threads(kWarpsPerBlock * kWarp);
  if (width % 8 == 0 && aligned16(dst) && aligned16(src))
    permute_rows_kernel<8, kToExperts><<<blocks, threads, 0, stream>>>(dst, src, segment_start, segment_source,
                                                                        segments, rows, width);
  else
    permute_rows_kernel<1, kToExperts><<<blocks, threads, 0, stream>>>(dst, src, segment_start, segment_source,
                                                                        segments, rows, width);
  CUDA_CHECK_LAUNCH("permute_rows_kernel");
}

// to[0, count) = from[0, count), one warp, kUnroll loads in flight per lane before their stores.
template <class T>
__device__ void copy_row(T* __restrict__ to, const T* __restrict__ from, int count, int lane) {
  constexpr int kUnroll = 4;
  for (int first = lane; first < count; first += kUnroll * kWarp) {
    T values[kUnroll];
#pragma unroll
    for (int j = 0; j < kUnroll; ++j)
      if (first + j * kWarp < count) values[j] = from[first + j * kWarp];
#pragma unroll
    for (int j = 0; j < kUnroll; ++j)
      if (first + j * kWarp < count) to[first + j * kWarp] = values[j];
  }
}

__device__ bool signatures_agree(const DirectRowsArgs& a) {
  const int32_t* g = a.agreed;  // max over ranks; each value is also negated, so max == own == min on every rank
  return g[0] == a.slot && g[1] == -a.slot && g[2] == a.buffer && g[3] == -a.buffer && g[4] == a.width &&
         g[5] == -a.width;
}

// One warp per row of this rank: kToExperts: owner's buffer row = send row; else receive row = owner's buffer row.
template <int kVec, bool kToExperts>
__global__ void direct_rows_kernel(DirectRowsArgs a) {
  if (a.agreed && !signatures_agree(a)) {
    if (blockIdx.x == 0 && threadIdx.x == 0) *a.disagreement = 1;
    return;
  }
  const int64_t global_row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  if (global_row >= a.rows) return;
  const int32_t row = static_cast<int32_t>(global_row);
  const int lane = threadIdx.x % kWarp;
  int owner = 0;
  const int32_t target =
      parallel::exchange_destination_row(a.offsets, a.base, a.experts, a.local_experts, row, &owner);
  const size_t w = static_cast<size_t>(a.width);
  bf16* remote = a.blocks[owner] + a.buffer_offset + static_cast<size_t>(target) * w;
  const size_t local = static_cast<size_t>(row) * w;
  if constexpr (kToExperts) {
    if constexpr (kVec == 8)
      copy_row(reinterpret_cast<uint4*>(remote), reinterpret_cast<const uint4*>(a.send + local), a.width / 8, lane);
    else
      copy_row(remote, a.send + local, a.width, lane);
    // Belt and braces: the trailing barrier runs after this kernel has completed, which already makes its peer stores
    // visible; the fence only costs the wait for their acknowledgement, once per warp.
    __threadfence_system();
  } else {
    if constexpr (kVec == 8)
      copy_row(reinterpret_cast<uint4*>(a.receive + local), reinterpret_cast<const uint4*>(remote), a.width / 8, lane);
    else
      copy_row(a.receive + local, remote, a.width, lane);
  }
}

template <bool kToExperts>
void direct_rows(const DirectRowsArgs& args, cudaStream_t stream) {
  if (args.rows == 0) return;
  const unsigned blocks = static_cast<unsigned>((args.rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
  const dim3 threads(kWarpsPerBlock * kWarp);
  // Row starts are aligned when the rows buffer and the blocks are and width % 8 == 0 (the blocks are cudaMalloc'd
  // and buffer_offset is a multiple of 128 elements, expert_buffer_stride's rounding; checked here all the same).
  const bf16* local = kToExperts ? args.send : args.receive;
  const bool vector = args.width % 8 == 0 && aligned16(local) && args.buffer_offset % 8 == 0;
  if (vector) direct_rows_kernel<8, kToExperts><<<blocks, threads, 0, stream>>>(args);
  else direct_rows_kernel<1, kToExperts><<<blocks, threads, 0, stream>>>(args);
  CUDA_CHECK_LAUNCH("direct_rows_kernel");
}

__global__ void sign_kernel(int32_t* signature, int slot, int buffer, int width) {
  signature[0] = slot;
  signature[1] = -slot;
  signature[2] = buffer;
  signature[3] = -buffer;
  signature[4] = width;
  signature[5] = -width;
}

}  // namespace

void exchange_direct_rows(const DirectRowsArgs& args, bool to_experts, cudaStream_t stream) {
  if (to_experts) direct_rows<true>(args, stream);
  else direct_rows<false>(args, stream);
}

void exchange_sign(int32_t* signature, int slot, int buffer, int width, cudaStream_t stream) {
  sign_kernel<<<1, 1, 0, stream>>>(signature, slot, buffer, width);
  CUDA_CHECK_LAUNCH("sign_kernel");
}

void exchange_gather_rows(bf16* expert_rows, const bf16* staging, const int32_t* segment_start,
                          const int32_t* segment_source, int segments, int32_t rows, int width, cudaStream_t stream) {
  permute_rows<true>(expert_rows, staging, segment_start, segment_source, segments, rows, width, stream);
}

void exchange_scatter_rows(bf16* staging, const bf16* expert_rows, const int32_t* segment_start,
                           const int32_t* segment_source, int segments, int32_t rows, int width, cudaStream_t stream) {
  permute_rows<false>(staging, expert_rows, segment_start, segment_source, segments, rows, width, stream);
}

}  // namespace moetune::cuda
