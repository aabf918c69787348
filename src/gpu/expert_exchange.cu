// Why: see expert_exchange.h. The received rows are reordered by a per-row segment lookup (a bisection over the
// (L*P + 1) segment starts, which stay in L1/L2) instead of a per-row index map, so a plan uploads a few hundred
// integers per layer rather than one per row. One warp per row; 16-byte vectors when the row allows.
#include "gpu/expert_exchange.h"

#include <cstdint>

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

}  // namespace

void exchange_gather_rows(bf16* expert_rows, const bf16* staging, const int32_t* segment_start,
                          const int32_t* segment_source, int segments, int32_t rows, int width, cudaStream_t stream) {
  permute_rows<true>(expert_rows, staging, segment_start, segment_source, segments, rows, width, stream);
}

void exchange_scatter_rows(bf16* staging, const bf16* expert_rows, const int32_t* segment_start,
                           const int32_t* segment_source, int segments, int32_t rows, int width, cudaStream_t stream) {
  permute_rows<false>(staging, expert_rows, segment_start, segment_source, segments, rows, width, stream);
}

}  // namespace moetune::cuda
