// Why: see bias.h. bias_add: one block per row, consecutive threads on consecutive columns. bias_grad: kernel 1 gives
// each thread one column of one row chunk (coalesced across a warp) and sums the chunk's rows in order; kernel 2 adds
// the chunk sums in chunk order.
#include "ops/cuda/bias.h"

#include <algorithm>

namespace moetune::cuda {
namespace {

constexpr int kMaxChunks = 512;
constexpr int kMinChunkRows = 32;
constexpr int kColumnThreads = 128;

int chunk_rows_for(int rows) { return std::max(kMinChunkRows, (rows + kMaxChunks - 1) / kMaxChunks); }
int threads_for(int cols) { return cols >= 256 ? 256 : ((cols + 31) / 32) * 32; }

__global__ void bias_add_kernel(bf16* out, const bf16* bias, int cols) {
  bf16* row = out + static_cast<size_t>(blockIdx.x) * cols;
  for (int c = threadIdx.x; c < cols; c += blockDim.x)
    row[c] = __float2bfloat16(__bfloat162float(row[c]) + __bfloat162float(bias[c]));
}

// partial (chunks, cols): partial[k][c] = sum over the rows of chunk k of d_out[r][c], rows in order.
__global__ void bias_grad_partial_kernel(float* partial, const bf16* d_out, int rows, int cols, int chunk_rows) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  const int begin = blockIdx.y * chunk_rows, end = min(rows, begin + chunk_rows);
  float sum = 0.0f;
  for (int r = begin; r < end; ++r) sum += __bfloat162float(d_out[static_cast<size_t>(r) * cols + c]);
  partial[static_cast<size_t>(blockIdx.y) * cols + c] = sum;
}

// d_bias[c] += sum over chunks k in order of partial[k][c].
__global__ void bias_grad_reduce_kernel(bf16* d_bias, const float* partial, int chunks, int cols) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  float sum = 0.0f;
  for (int k = 0; k < chunks; ++k) sum += partial[static_cast<size_t>(k) * cols + c];
  d_bias[c] = __float2bfloat16(__bfloat162float(d_bias[c]) + sum);
}

}  // namespace

void bias_add(bf16* out, const bf16* bias, int rows, int cols, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  bias_add_kernel<<<rows, threads_for(cols), 0, stream>>>(out, bias, cols);
  CUDA_CHECK_LAUNCH("bias_add_kernel");
}

size_t bias_grad_scratch_floats(int rows, int cols) {
  if (rows <= 0 || cols <= 0) return 0;
  const int chunk_rows = chunk_rows_for(rows);
  return static_cast<size_t>((rows + chunk_rows - 1) / chunk_rows) * cols;
}

void bias_grad(bf16* d_bias, const bf16* d_out, int rows, int cols, float* scratch, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  const int chunk_rows = chunk_rows_for(rows);
  const int chunks = (rows + chunk_rows - 1) / chunk_rows;
  const unsigned column_blocks = (cols + kColumnThreads - 1) / kColumnThreads;
  bias_grad_partial_kernel<<<dim3(column_blocks, chunks), kColumnThreads, 0, stream>>>(scratch, d_out, rows, cols,
                                                                                      chunk_rows);
  CUDA_CHECK_LAUNCH("bias_grad_partial_kernel");
  bias_grad_reduce_kernel<<<column_blocks, kColumnThreads, 0, stream>>>(d_bias, scratch, chunks, cols);
  CUDA_CHECK_LAUNCH("bias_grad_reduce_kernel");
}

}  // namespace moetune::cuda
