// Why: see embedding.h. Forward: one block per token copies its table row (16-byte vectors when rows are aligned).
// Backward: (position, id) pairs sorted by id with cub's stable radix sort; then one block per sorted position, of
// which only run heads work: each sums its run's rows column by column in token order.
#include "ops/cuda/embedding.h"

#include <algorithm>
#include <cstdint>
#include <cub/device/device_radix_sort.cuh>

namespace moetune::cuda {
namespace {

constexpr int kCopyThreads = 128;
constexpr int kColumnThreads = 256;

__global__ void embedding_forward_kernel(bf16* out, const int32_t* ids, const bf16* table, int hidden, bool vectorized) {
  const bf16* src = table + static_cast<size_t>(ids[blockIdx.x]) * hidden;
  bf16* dst = out + static_cast<size_t>(blockIdx.x) * hidden;
  if (vectorized) {  // hidden % 8 == 0 and both base pointers 16-byte aligned
    const uint4* src4 = reinterpret_cast<const uint4*>(src);
    uint4* dst4 = reinterpret_cast<uint4*>(dst);
    for (int i = threadIdx.x; i < hidden / 8; i += blockDim.x) dst4[i] = src4[i];
  } else {
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = src[i];
  }
}

__global__ void iota_kernel(int32_t* values, int count) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < count) values[i] = i;
}

// Block i handles sorted position i if it starts a run of equal ids: sums the run's rows in token order, adds once.
__global__ void embedding_run_sum_kernel(bf16* d_table, const bf16* d_out, const int32_t* sorted_ids,
                                         const int32_t* sorted_positions, int tokens, int hidden, int padding_idx) {
  const int start = blockIdx.x;
  const int id = sorted_ids[start];
  if ((start > 0 && sorted_ids[start - 1] == id) || id == padding_idx) return;
  int end = start + 1;
  while (end < tokens && sorted_ids[end] == id) ++end;
  bf16* row = d_table + static_cast<size_t>(id) * hidden;
  for (int h = threadIdx.x; h < hidden; h += blockDim.x) {
    float sum = 0.0f;
    for (int r = start; r < end; ++r) sum += __bfloat162float(d_out[static_cast<size_t>(sorted_positions[r]) * hidden + h]);
    row[h] = __float2bfloat16(__bfloat162float(row[h]) + sum);
  }
}

struct SortScratch {  // carved from the caller's scratch, 256-byte aligned pieces
  int32_t *positions, *sorted_ids, *sorted_positions;
  void* cub_storage;
  size_t cub_bytes;
};

size_t align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

size_t cub_sort_bytes(int tokens) {
  size_t bytes = 0;
  cub::DeviceRadixSort::SortPairs(nullptr, bytes, static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr),
                                  static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr), tokens);
  return bytes;
}

SortScratch carve(void* scratch, int tokens) {
  char* base = static_cast<char*>(scratch);
  const size_t ints = align256(sizeof(int32_t) * static_cast<size_t>(tokens));
  return {reinterpret_cast<int32_t*>(base), reinterpret_cast<int32_t*>(base + ints),
          reinterpret_cast<int32_t*>(base + 2 * ints), base + 3 * ints, cub_sort_bytes(tokens)};
}

}  // namespace

void embedding_forward(bf16* out, const int32_t* ids, const bf16* table, int tokens, int hidden, cudaStream_t stream) {
  if (tokens <= 0 || hidden <= 0) return;
  const bool vectorized = hidden % 8 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0 &&
                          reinterpret_cast<uintptr_t>(table) % 16 == 0;
  embedding_forward_kernel<<<tokens, kCopyThreads, 0, stream>>>(out, ids, table, hidden, vectorized);
  CUDA_CHECK_LAUNCH("embedding_forward_kernel");
}

size_t embedding_backward_scratch_bytes(int tokens) {
  return 3 * align256(sizeof(int32_t) * static_cast<size_t>(std::max(tokens, 1))) + cub_sort_bytes(std::max(tokens, 1));
}

void embedding_backward(bf16* d_table, const bf16* d_out, const int32_t* ids, int tokens, int hidden, int padding_idx,
                        void* scratch, cudaStream_t stream) {
  if (tokens <= 0 || hidden <= 0) return;
  SortScratch s = carve(scratch, tokens);
  iota_kernel<<<(tokens + 255) / 256, 256, 0, stream>>>(s.positions, tokens);
  CUDA_CHECK_LAUNCH("iota_kernel");
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(s.cub_storage, s.cub_bytes, ids, s.sorted_ids, s.positions,
                                             s.sorted_positions, tokens, 0, 32, stream));
  embedding_run_sum_kernel<<<tokens, kColumnThreads, 0, stream>>>(d_table, d_out, s.sorted_ids, s.sorted_positions,
                                                                   tokens, hidden, padding_idx);
  CUDA_CHECK_LAUNCH("embedding_run_sum_kernel");
}

}  // namespace moetune::cuda
