// Why: see rmsnorm.h. Row kernels give each row a group of threads along x: one warp per row (4 rows per block) when
// cols <= 128, else one block per row with up to 512 threads, so per-head norms (cols = head_dim) do not leave most of
// a 512-thread block idle. Sums are fp32 with warp-shuffle trees, in a fixed order for a given shape.
// The weight gradient is the only cross-row reduction: kernel 1 sums fixed chunks of rows per column into scratch,
// kernel 2 adds the chunk sums in chunk order (no atomics, so bitwise deterministic). It runs before the d_in kernel
// because d_in may overwrite d_out in place.
#include "ops/cuda/rmsnorm.h"

#include <algorithm>

namespace moetune::cuda {
namespace {

constexpr int kMaxChunks = 512;    // row chunks of the weight-gradient partial sums
constexpr int kMinChunkRows = 32;  // rows per chunk at least
constexpr int kColumnThreads = 128;

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Sum of v over threadIdx.x (one row group), returned to every thread of the group. Either blockDim.x == 32 (a warp per
// row, no barrier) or blockDim.y == 1 and blockDim.x a multiple of 32 (every thread of the block must call it).
__device__ float row_sum(float v) {
  __shared__ float partial[32];
  v = warp_sum(v);
  if (blockDim.x == 32) return v;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < static_cast<int>(blockDim.x >> 5) ? partial[lane] : 0.0f;
  v = warp_sum(v);
  __syncthreads();  // partial is free for the next call
  return v;
}

struct RowLaunch {
  dim3 block;
  unsigned grid;
};

RowLaunch row_launch(int rows, int cols) {
  int threads = 32;
  while (threads < 512 && threads * 4 < cols) threads *= 2;  // at least ~4 elements per thread
  const int rows_per_block = threads == 32 ? 4 : 1;
  return {dim3(threads, rows_per_block), static_cast<unsigned>((rows + rows_per_block - 1) / rows_per_block)};
}

int chunk_rows_for(int rows) { return std::max(kMinChunkRows, (rows + kMaxChunks - 1) / kMaxChunks); }

// kAdd: first residual_out = bf16(in + b), and the norm reads the rounded residual back.
template <bool kAdd>
__global__ void rmsnorm_forward_kernel(bf16* out, float* rstd, const bf16* in, const bf16* b, bf16* residual_out,
                                       const bf16* weight, int rows, int cols, float eps) {
  const int row = blockIdx.x * blockDim.y + threadIdx.y;
  if (row >= rows) return;  // only with blockDim.y > 1, where row_sum has no barrier
  const size_t base = static_cast<size_t>(row) * cols;
  float sum_squares = 0.0f;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    float x;
    if constexpr (kAdd) {
      const bf16 sum = __float2bfloat16(__bfloat162float(in[base + c]) + __bfloat162float(b[base + c]));
      residual_out[base + c] = sum;
      x = __bfloat162float(sum);
    } else {
      x = __bfloat162float(in[base + c]);
    }
    sum_squares += x * x;
  }
  const float inv = 1.0f / sqrtf(row_sum(sum_squares) / static_cast<float>(cols) + eps);
  if (threadIdx.x == 0) rstd[row] = inv;
  const bf16* x_row = kAdd ? residual_out : in;  // this thread's own earlier writes, so no barrier is needed
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    const float x = __bfloat162float(x_row[base + c]);
    out[base + c] = __float2bfloat16(__bfloat162float(weight[c]) * (x * inv));
  }
}

// d_in = dy * w * inv - x * (sum(dy * w * x) * inv^3 / cols), one row group per row.
__global__ void rmsnorm_backward_input_kernel(bf16* d_in, const bf16* d_out, const bf16* in, const bf16* weight,
                                              const float* rstd, int rows, int cols) {
  const int row = blockIdx.x * blockDim.y + threadIdx.y;
  if (row >= rows) return;
  const size_t base = static_cast<size_t>(row) * cols;
  float dot = 0.0f;
  for (int c = threadIdx.x; c < cols; c += blockDim.x)
    dot += __bfloat162float(d_out[base + c]) * __bfloat162float(weight[c]) * __bfloat162float(in[base + c]);
  dot = row_sum(dot);  // its barriers also order every read of d_out before the writes below (d_in may alias it)
  const float inv = rstd[row];
  const float correction = dot * inv * inv * inv / static_cast<float>(cols);
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    const float dy = __bfloat162float(d_out[base + c]), x = __bfloat162float(in[base + c]);
    d_in[base + c] = __float2bfloat16(dy * __bfloat162float(weight[c]) * inv - x * correction);
  }
}

// partial (chunks, cols): partial[k][c] = sum over the rows of chunk k of dy * (x * inv), rows in order.
__global__ void rmsnorm_weight_partial_kernel(float* partial, const bf16* d_out, const bf16* in, const float* rstd,
                                              int rows, int cols, int chunk_rows) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  const int begin = blockIdx.y * chunk_rows, end = min(rows, begin + chunk_rows);
  float sum = 0.0f;
  for (int r = begin; r < end; ++r) {
    const size_t index = static_cast<size_t>(r) * cols + c;
    sum += __bfloat162float(d_out[index]) * (__bfloat162float(in[index]) * rstd[r]);
  }
  partial[static_cast<size_t>(blockIdx.y) * cols + c] = sum;
}

// d_weight[c] += sum over chunks k in order of partial[k][c].
__global__ void rmsnorm_weight_reduce_kernel(float* d_weight, const float* partial, int chunks, int cols) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  float sum = 0.0f;
  for (int k = 0; k < chunks; ++k) sum += partial[static_cast<size_t>(k) * cols + c];
  d_weight[c] += sum;
}

}  // namespace

void rmsnorm_forward(bf16* out, float* rstd, const bf16* in, const bf16* weight, int rows, int cols, float eps,
                     cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  const RowLaunch launch = row_launch(rows, cols);
  rmsnorm_forward_kernel<false><<<launch.grid, launch.block, 0, stream>>>(out, rstd, in, nullptr, nullptr, weight, rows,
                                                                         cols, eps);
  CUDA_CHECK_LAUNCH("rmsnorm_forward_kernel");
}

void add_rmsnorm_forward(bf16* residual_out, bf16* normed, float* rstd, const bf16* a, const bf16* b, const bf16* weight,
                         int rows, int cols, float eps, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  const RowLaunch launch = row_launch(rows, cols);
  rmsnorm_forward_kernel<true><<<launch.grid, launch.block, 0, stream>>>(normed, rstd, a, b, residual_out, weight, rows,
                                                                        cols, eps);
  CUDA_CHECK_LAUNCH("add_rmsnorm_forward_kernel");
}

size_t rmsnorm_backward_scratch_floats(int rows, int cols) {
  if (rows <= 0 || cols <= 0) return 0;
  const int chunk_rows = chunk_rows_for(rows);
  return static_cast<size_t>((rows + chunk_rows - 1) / chunk_rows) * cols;
}

void rmsnorm_backward(bf16* d_in, float* d_weight, const bf16* d_out, const bf16* in, const bf16* weight,
                      const float* rstd, int rows, int cols, float* scratch, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  const int chunk_rows = chunk_rows_for(rows);
  const int chunks = (rows + chunk_rows - 1) / chunk_rows;
  const unsigned column_blocks = (cols + kColumnThreads - 1) / kColumnThreads;
  rmsnorm_weight_partial_kernel<<<dim3(column_blocks, chunks), kColumnThreads, 0, stream>>>(scratch, d_out, in, rstd,
                                                                                            rows, cols, chunk_rows);
  CUDA_CHECK_LAUNCH("rmsnorm_weight_partial_kernel");
  rmsnorm_weight_reduce_kernel<<<column_blocks, kColumnThreads, 0, stream>>>(d_weight, scratch, chunks, cols);
  CUDA_CHECK_LAUNCH("rmsnorm_weight_reduce_kernel");
  const RowLaunch launch = row_launch(rows, cols);
  rmsnorm_backward_input_kernel<<<launch.grid, launch.block, 0, stream>>>(d_in, d_out, in, weight, rstd, rows, cols);
  CUDA_CHECK_LAUNCH("rmsnorm_backward_input_kernel");
}

}  // namespace moetune::cuda
