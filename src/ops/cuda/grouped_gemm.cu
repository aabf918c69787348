// Why: see grouped_gemm.h. An Ampere-style tensor-core GEMM (mma.sync m16n8k16 bf16, fp32 accumulators) that runs well
// on Hopper and needs no host knowledge of the expert sizes:
//
// - CTA tile 128 x 128, K-step 64, 4 warps of 64 x 64 each (128 fp32 accumulators per thread), 3-stage cp.async
//   pipeline: 3 x (128x64 + 128x64) bf16 = 96 KiB of shared memory, so two CTAs share an SM (one's epilogue and
//   prologue overlap the other's main loop). A 64 x 64 warp tile keeps shared-memory reads per MMA low enough for the
//   tensor cores to be the bottleneck.
// - Shared tiles are stored as [strided][contiguous] exactly as in global memory (the contiguous dimension is K for
//   an operand stored K-major, M or N otherwise); the 16-byte chunk c of row r lives at chunk c ^ (r & 7), which makes
//   both the cp.async writes and the ldmatrix (.trans for M/N-contiguous operands) reads conflict-free.
// - Ragged edges are zero-filled cp.async loads (src-size 0): rows past the expert's end for kNT/kNN (its M), the K
//   tail (the expert's rows) for kTN, and N/M past the matrix (dimensions are multiples of 64, tiles are 128).
// - kNT/kNN scheduling: grid.y is an upper bound of the row tiles (ceil(max_rows/128) + E); each CTA computes the
//   per-expert tile counts ceil(rows_e/128) and their prefix from expert_offsets (block scan, E <= 256) and handles
//   row tiles blockIdx.y, blockIdx.y + gridDim.y, ... (normally one, or none). grid.x walks N fastest, so the CTAs
//   that share an A row tile run together and it is read from DRAM once. kTN/kTNWrite: grid = (N tiles, M tiles, E);
//   the reduction runs over the expert's rows and kTN's epilogue adds the old C (kTNWrite's does not, and an expert
//   with no rows runs no K-step: its tiles are written as zeros).
// - Epilogue: accumulators go through shared memory in fp32 (so kTN rounds old C + product once), then each thread
//   writes 16-byte chunks of 8 bf16 (row-coalesced). grouped_gemm_adamw's epilogue instead reads the same chunks of
//   the weights and both moments and writes them back stepped; with two CTAs per SM, that traffic overlaps the other
//   CTA's main loop.
#include "ops/cuda/grouped_gemm.h"

#include <algorithm>

#include "ops/cuda/adamw_element.cuh"

namespace moetune::cuda {
namespace {

constexpr int kBM = 128, kBN = 128, kBK = 64;  // CTA tile (C rows x C cols x K-step)
constexpr int kStages = 3;
constexpr int kWarpM = 64, kWarpN = 64;
constexpr int kWarps = (kBM / kWarpM) * (kBN / kWarpN);  // 4, laid out 2 (M) x 2 (N)
constexpr int kThreads = kWarps * 32;
constexpr int kMmaM = kWarpM / 16, kMmaN = kWarpN / 8;  // 4 x 8 mma tiles of 16 x 8 per warp
constexpr int kTileElems = kBM * kBK;                   // one operand's tile per stage (A and B tiles are equal)
static_assert(kBM == kBN && kTileElems % (8 * kThreads) == 0);
constexpr int kStageBytes = 2 * kTileElems * 2;              // A and B tiles, 2 bytes an element
constexpr int kPipelineBytes = kStages * kStageBytes;   // 98304
constexpr int kStagingLd = kBN + 8;                     // fp32 epilogue row stride (float2 writes conflict-free)
constexpr int kSmemBytes = kPipelineBytes;
static_assert(kBM * kStagingLd * 4 <= kSmemBytes);
constexpr int kExpertsPerThread = kGroupedGemmMaxExperts / kThreads;
static_assert(kExpertsPerThread * kThreads == kGroupedGemmMaxExperts && kGroupedGemmDimMultiple % kBK == 0);

// What kTN's epilogue does with the product: store it (kTNWrite), add the old C (kTN), or take the AdamW step of the
// weights C with moments m, v (grouped_gemm_adamw).
enum class WeightGradEpilogue { kWrite, kAccumulate, kAdamW };

struct Params {
  const int32_t* offsets;
  int experts, a_cols, c_cols;
  const bf16* A;
  const bf16* B;
  bf16* C;
  WeightGradEpilogue epilogue;  // kTN only
  bf16* m;                      // kAdamW: the moments (C's shape)
  bf16* v;
  AdamWCoefficients adamw;
  float decay;                  // kAdamW: adamw.decay, or 1 without weight decay
};

// One operand of a tile: element (outer, k) is base[outer * ld + k] when stored K-contiguous, base[k * ld + outer]
// otherwise; outer is the C row (operand A) or C column (operand B). Loads with outer >= outer_limit or k >= k_limit
// read zeros.
struct Operand {
  const bf16* base;
  long ld;
  int outer0, outer_limit, k_limit;
};

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

template <bool kTrans>
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  if constexpr (kTrans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}

// d (16x8, fp32) += a (16x16, row) · b (16x8, col).
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// Byte offset of element chunk `chunk` (8 bf16) of row `row` in a swizzled tile with rows of kRowElems.
template <int kRowElems>
__device__ __forceinline__ uint32_t swizzled(int row, int chunk) {
  return 2u * static_cast<uint32_t>(row * kRowElems + ((chunk ^ (row & 7)) << 3));
}

// Copies the 128 (outer) x 64 (k) tile at k0 into shared memory: [outer][k] when K-contiguous, else [k][outer].
template <bool kContigK>
__device__ __forceinline__ void load_tile(uint32_t tile, const Operand& op, int k0) {
  constexpr int kRowElems = kContigK ? kBK : kBM;
  constexpr int kChunksPerRow = kRowElems / 8;
  constexpr int kRowsPerPass = kThreads / kChunksPerRow;
  const int chunk = threadIdx.x % kChunksPerRow;
#pragma unroll
  for (int pass = 0; pass < kTileElems / (8 * kThreads); ++pass) {
    const int row = threadIdx.x / kChunksPerRow + pass * kRowsPerPass;
    const int outer = op.outer0 + (kContigK ? row : chunk * 8);
    const int k = k0 + (kContigK ? chunk * 8 : row);
    const bool valid = outer < op.outer_limit && k < op.k_limit;
    const long index = kContigK ? static_cast<long>(outer) * op.ld + k : static_cast<long>(k) * op.ld + outer;
    cp_async_16(tile + swizzled<kRowElems>(row, chunk), op.base + (valid ? index : 0), valid);  // !valid: zeros
  }
}

// One K-step (64) of the warp's 64 x 64 product from one pipeline stage. Lane l addresses row l % 8 of 8x8 matrix
// l / 8 of each ldmatrix.x4; the matrices are ordered as the mma fragments need them (A: rows 0-7/8-15 x k 0-7, then
// k 8-15; B: k 0-7/8-15 of columns 0-7, then of columns 8-15). Tile rows are multiples of 8 apart, so the swizzle
// term is always l % 8.
template <bool kAContigK, bool kBContigK>
__device__ __forceinline__ void mma_stage(float (&acc)[kMmaM][kMmaN][4], uint32_t a_tile, uint32_t b_tile, int warp_m0,
                                          int warp_n0) {
  const int lane = threadIdx.x % 32, r = lane & 7, q = lane >> 3;
#pragma unroll
  for (int kk = 0; kk < kBK / 16; ++kk) {
    uint32_t a[kMmaM][4], b[kMmaN][2];
#pragma unroll
    for (int mi = 0; mi < kMmaM; ++mi) {
      const int m0 = warp_m0 + mi * 16;
      if constexpr (kAContigK)
        ldmatrix_x4<false>(a[mi], a_tile + swizzled<kBK>(m0 + r + (q & 1) * 8, kk * 2 + (q >> 1)));
      else
        ldmatrix_x4<true>(a[mi], a_tile + swizzled<kBM>(kk * 16 + r + (q >> 1) * 8, m0 / 8 + (q & 1)));
    }
#pragma unroll
    for (int nj = 0; nj < kMmaN / 2; ++nj) {
      const int n0 = warp_n0 + nj * 16;
      uint32_t f[4];
      if constexpr (kBContigK)
        ldmatrix_x4<false>(f, b_tile + swizzled<kBK>(n0 + r + (q >> 1) * 8, kk * 2 + (q & 1)));
      else
        ldmatrix_x4<true>(f, b_tile + swizzled<kBN>(kk * 16 + r + (q & 1) * 8, n0 / 8 + (q >> 1)));
      b[2 * nj][0] = f[0];
      b[2 * nj][1] = f[1];
      b[2 * nj + 1][0] = f[2];
      b[2 * nj + 1][1] = f[3];
    }
#pragma unroll
    for (int mi = 0; mi < kMmaM; ++mi)
#pragma unroll
      for (int ni = 0; ni < kMmaN; ++ni) mma_bf16(acc[mi][ni], a[mi], b[ni]);
  }
}

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

__device__ __forceinline__ float2 unpack_bf16x2(uint32_t bits) {
  return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&bits));
}

__device__ __forceinline__ uint4 pack8(const float (&v)[8]) {
  return make_uint4(pack_bf16x2(v[0], v[1]), pack_bf16x2(v[2], v[3]), pack_bf16x2(v[4], v[5]), pack_bf16x2(v[6], v[7]));
}

// kTN's AdamW epilogue: the thread's 8-element chunks (column n, every kThreads / 16-th row of the tile) of the fp32
// product in `staging` are rounded to bf16, the gradient a kTNWrite would store, and step the weights C[expert] and
// moments m, v at the same place (adamw_element.cuh). The 16-byte loads of a batch of rows are issued together so that
// each thread keeps several in flight (the stores of one row could alias the next row's loads for the compiler): 8 rows,
// 24 loads per thread, ran one Qwen3 MoE layer's step 2.5% faster than 4 rows on the H200 (the epilogue is
// memory-bound; the accumulators are dead by then, so the registers are free).
__device__ __forceinline__ void adamw_epilogue(const Params& p, const float* staging, int expert, int tile_m0, int n,
                                               int chunk) {
  constexpr int kRowStep = kThreads / (kBN / 8), kBatch = 8;
  if (n >= p.c_cols) return;
  for (int row0 = threadIdx.x / (kBN / 8); row0 < kBM; row0 += kBatch * kRowStep) {
    uint4 w[kBatch], m[kBatch], v[kBatch];
    long index[kBatch];
    bool valid[kBatch];
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int row = tile_m0 + row0 + b * kRowStep;
      valid[b] = row0 + b * kRowStep < kBM && row < p.a_cols;
      index[b] = (static_cast<long>(expert) * p.a_cols + row) * p.c_cols + n;
      if (valid[b]) {
        w[b] = *reinterpret_cast<const uint4*>(p.C + index[b]);
        m[b] = *reinterpret_cast<const uint4*>(p.m + index[b]);
        v[b] = *reinterpret_cast<const uint4*>(p.v + index[b]);
      }
    }
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      if (!valid[b]) continue;
      const float* product = &staging[(row0 + b * kRowStep) * kStagingLd + chunk * 8];
      const float4 lo = *reinterpret_cast<const float4*>(product), hi = *reinterpret_cast<const float4*>(product + 4);
      const float g[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
      adamw_bf16x8(w[b], m[b], v[b], pack8(g), p.decay, p.adamw);
      *reinterpret_cast<uint4*>(p.C + index[b]) = w[b];
      *reinterpret_cast<uint4*>(p.m + index[b]) = m[b];
      *reinterpret_cast<uint4*>(p.v + index[b]) = v[b];
    }
  }
}

// One 128 x 128 output tile. kNT/kNN: C rows [tile_m0, min(tile_m0 + 128, row_end)) of expert `expert`, reduction over
// a_cols. kTN: C[expert] rows [tile_m0, +128) (of a_cols), reduction over the expert's rows [row_begin, row_end).
template <GroupedLayout kLayout>
__device__ __forceinline__ void gemm_tile(const Params& p, unsigned char* smem, int expert, int row_begin, int row_end,
                                          int tile_m0, int tile_n0) {
  constexpr bool kAContigK = kLayout != GroupedLayout::kTN;
  constexpr bool kBContigK = kLayout == GroupedLayout::kNT;
  Operand a, b;
  int k_tiles;
  if constexpr (kLayout == GroupedLayout::kTN) {
    const int rows = row_end - row_begin;
    a = {p.A + static_cast<long>(row_begin) * p.a_cols, p.a_cols, tile_m0, p.a_cols, rows};
    b = {p.B + static_cast<long>(row_begin) * p.c_cols, p.c_cols, tile_n0, p.c_cols, rows};
    k_tiles = (rows + kBK - 1) / kBK;
  } else {
    a = {p.A, p.a_cols, tile_m0, row_end, p.a_cols};
    const bf16* weight = p.B + static_cast<long>(expert) * p.a_cols * p.c_cols;
    b = {weight, kBContigK ? p.a_cols : p.c_cols, tile_n0, p.c_cols, p.a_cols};
    k_tiles = p.a_cols / kBK;
  }

  const uint32_t smem_base = smem_u32(smem);
  const int warp = threadIdx.x / 32;
  const int warp_m0 = (warp / (kBN / kWarpN)) * kWarpM, warp_n0 = (warp % (kBN / kWarpN)) * kWarpN;
  float acc[kMmaM][kMmaN][4] = {};

  // Stage s holds A's tile at s * kStageBytes and B's right after it. One commit group per K-step, empty ones included,
  // so that wait_group(kStages - 2) always means "K-step kt has landed".
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < k_tiles) {
      load_tile<kAContigK>(smem_base + s * kStageBytes, a, s * kBK);
      load_tile<kBContigK>(smem_base + s * kStageBytes + kTileElems * 2, b, s * kBK);
    }
    cp_async_commit();
  }
  for (int kt = 0; kt < k_tiles; ++kt) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // K-step kt visible to all; everyone is done reading the stage refilled below
    const int next = kt + kStages - 1;
    if (next < k_tiles) {
      const uint32_t stage = smem_base + (next % kStages) * kStageBytes;
      load_tile<kAContigK>(stage, a, next * kBK);
      load_tile<kBContigK>(stage + kTileElems * 2, b, next * kBK);
    }
    cp_async_commit();
    const uint32_t stage = smem_base + (kt % kStages) * kStageBytes;
    mma_stage<kAContigK, kBContigK>(acc, stage, stage + kTileElems * 2, warp_m0, warp_n0);
  }
  cp_async_wait<0>();
  __syncthreads();  // the pipeline's shared memory becomes the fp32 staging tile

  float* staging = reinterpret_cast<float*>(smem);
  const int lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int mi = 0; mi < kMmaM; ++mi)
#pragma unroll
    for (int ni = 0; ni < kMmaN; ++ni) {
      const int row = warp_m0 + mi * 16 + g, col = warp_n0 + ni * 8 + 2 * t;
      *reinterpret_cast<float2*>(&staging[row * kStagingLd + col]) = make_float2(acc[mi][ni][0], acc[mi][ni][1]);
      *reinterpret_cast<float2*>(&staging[(row + 8) * kStagingLd + col]) = make_float2(acc[mi][ni][2], acc[mi][ni][3]);
    }
  __syncthreads();

  constexpr int kChunksPerRow = kBN / 8;
  const int chunk = threadIdx.x % kChunksPerRow, n = tile_n0 + chunk * 8;
  if constexpr (kLayout == GroupedLayout::kTN) {
    if (p.epilogue == WeightGradEpilogue::kAdamW) {
      adamw_epilogue(p, staging, expert, tile_m0, n, chunk);
      __syncthreads();
      return;
    }
  }
#pragma unroll 4
  for (int row = threadIdx.x / kChunksPerRow; row < kBM; row += kThreads / kChunksPerRow) {
    const int m = tile_m0 + row;
    long index;
    if constexpr (kLayout == GroupedLayout::kTN) {
      if (m >= p.a_cols || n >= p.c_cols) continue;
      index = (static_cast<long>(expert) * p.a_cols + m) * p.c_cols + n;
    } else {
      if (m >= row_end || n >= p.c_cols) continue;
      index = static_cast<long>(m) * p.c_cols + n;
    }
    const float4 lo = *reinterpret_cast<const float4*>(&staging[row * kStagingLd + chunk * 8]);
    const float4 hi = *reinterpret_cast<const float4*>(&staging[row * kStagingLd + chunk * 8 + 4]);
    float v[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
    uint4* dst = reinterpret_cast<uint4*>(p.C + index);
    if (kLayout == GroupedLayout::kTN && p.epilogue == WeightGradEpilogue::kAccumulate) {
      const uint4 old = *dst;
      const uint32_t old_words[4] = {old.x, old.y, old.z, old.w};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float2 o = unpack_bf16x2(old_words[i]);
        v[2 * i] += o.x;
        v[2 * i + 1] += o.y;
      }
    }
    *dst = pack8(v);
  }
  __syncthreads();  // staging is read before a next tile of this CTA refills the pipeline
}

// kNT/kNN: where each expert's row tiles start in the global tile order (expert-major), per thread for its
// kExpertsPerThread consecutive experts, and the total number of row tiles.
struct RowTiles {
  int first[kExpertsPerThread], count[kExpertsPerThread];
  int total;
};

__device__ RowTiles count_row_tiles(const int32_t* offsets, int experts, int* warp_totals) {
  RowTiles tiles;
  int local = 0;
#pragma unroll
  for (int i = 0; i < kExpertsPerThread; ++i) {
    const int e = threadIdx.x * kExpertsPerThread + i;
    const int rows = e < experts ? offsets[e + 1] - offsets[e] : 0;
    tiles.count[i] = rows > 0 ? (rows + kBM - 1) / kBM : 0;
    local += tiles.count[i];
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  int inclusive = local;
#pragma unroll
  for (int step = 1; step < 32; step *= 2) {
    const int v = __shfl_up_sync(0xffffffffu, inclusive, step);
    if (lane >= step) inclusive += v;
  }
  if (lane == 31) warp_totals[warp] = inclusive;
  __syncthreads();
  int start = inclusive - local;
  tiles.total = 0;
  for (int w = 0; w < kWarps; ++w) {
    start += w < warp ? warp_totals[w] : 0;
    tiles.total += warp_totals[w];
  }
#pragma unroll
  for (int i = 0; i < kExpertsPerThread; ++i) {
    tiles.first[i] = start;
    start += tiles.count[i];
  }
  return tiles;
}

template <GroupedLayout kLayout>
__global__ void __launch_bounds__(kThreads, 2) grouped_gemm_kernel(const Params p) {
  extern __shared__ __align__(128) unsigned char smem[];
  if constexpr (kLayout == GroupedLayout::kTN) {
    const int expert = blockIdx.z;
    const int row_begin = p.offsets[expert], row_end = p.offsets[expert + 1];
    // kTN: C[expert] untouched; kTNWrite writes zeros, kAdamW steps with a zero gradient
    if (row_end <= row_begin && p.epilogue == WeightGradEpilogue::kAccumulate) return;
    gemm_tile<kLayout>(p, smem, expert, row_begin, row_end, blockIdx.y * kBM, blockIdx.x * kBN);
  } else {
    __shared__ int warp_totals[kWarps];
    __shared__ int owner[2];  // expert, row tile within the expert
    const RowTiles tiles = count_row_tiles(p.offsets, p.experts, warp_totals);
    for (int tile = blockIdx.y; tile < tiles.total; tile += gridDim.y) {
#pragma unroll
      for (int i = 0; i < kExpertsPerThread; ++i)
        if (tile >= tiles.first[i] && tile < tiles.first[i] + tiles.count[i]) {
          owner[0] = threadIdx.x * kExpertsPerThread + i;
          owner[1] = tile - tiles.first[i];
        }
      __syncthreads();
      const int expert = owner[0];
      const int row_begin = p.offsets[expert], row_end = p.offsets[expert + 1];
      gemm_tile<kLayout>(p, smem, expert, row_begin, row_end, row_begin + owner[1] * kBM, blockIdx.x * kBN);
    }
  }
}

template <GroupedLayout kLayout>
void launch(const Params& p, dim3 grid, cudaStream_t stream) {
  CUDA_CHECK(
      cudaFuncSetAttribute(grouped_gemm_kernel<kLayout>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes));
  grouped_gemm_kernel<kLayout><<<grid, kThreads, kSmemBytes, stream>>>(p);
  CUDA_CHECK_LAUNCH("grouped_gemm_kernel");
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

void check_arguments(const char* what, const int32_t* expert_offsets, int experts, long max_rows, int a_cols,
                     int c_cols, const bf16* A, const bf16* B, const bf16* C) {
  if (experts < 1 || experts > kGroupedGemmMaxExperts)
    fail(what, ": experts = ", experts, ", expected 1..", kGroupedGemmMaxExperts);
  if (a_cols <= 0 || a_cols % kGroupedGemmDimMultiple != 0 || c_cols <= 0 || c_cols % kGroupedGemmDimMultiple != 0)
    fail(what, ": a_cols = ", a_cols, ", c_cols = ", c_cols, ": both must be positive multiples of ",
         kGroupedGemmDimMultiple);
  if (max_rows < 0) fail(what, ": max_rows = ", max_rows, " is negative");
  if (!expert_offsets || !aligned16(A) || !aligned16(B) || !aligned16(C))
    fail(what, ": expert_offsets must be non-null and A, B, C 16-byte aligned");
}

dim3 weight_grad_grid(int experts, int a_cols, int c_cols) {
  return dim3((c_cols + kBN - 1) / kBN, (a_cols + kBM - 1) / kBM, experts);
}

}  // namespace

void grouped_gemm(GroupedLayout layout, const int32_t* expert_offsets, int experts, long max_rows, int a_cols,
                  int c_cols, const bf16* A, const bf16* B, bf16* C, cudaStream_t stream) {
  check_arguments("grouped_gemm", expert_offsets, experts, max_rows, a_cols, c_cols, A, B, C);
  const Params p{expert_offsets, experts, a_cols, c_cols, A, B, C,
                 layout == GroupedLayout::kTN ? WeightGradEpilogue::kAccumulate : WeightGradEpilogue::kWrite};
  const unsigned n_tiles = (c_cols + kBN - 1) / kBN;
  if (layout == GroupedLayout::kTN || layout == GroupedLayout::kTNWrite) {
    launch<GroupedLayout::kTN>(p, weight_grad_grid(experts, a_cols, c_cols), stream);
    return;
  }
  // Row tiles: sum_e ceil(rows_e / 128) <= ceil(rows / 128) + E. gridDim.y is capped; CTAs then loop.
  const long row_tiles = std::min<long>((max_rows + kBM - 1) / kBM + experts, 65535);
  const dim3 grid(n_tiles, static_cast<unsigned>(row_tiles));
  if (layout == GroupedLayout::kNT)
    launch<GroupedLayout::kNT>(p, grid, stream);
  else
    launch<GroupedLayout::kNN>(p, grid, stream);
}

void grouped_gemm_adamw(const int32_t* expert_offsets, int experts, int a_cols, int c_cols, const bf16* A,
                        const bf16* B, bf16* W, const GroupedAdamW& step, cudaStream_t stream) {
  check_arguments("grouped_gemm_adamw", expert_offsets, experts, 0, a_cols, c_cols, A, B, W);
  if (!aligned16(step.m) || !aligned16(step.v)) fail("grouped_gemm_adamw: the moments must be 16-byte aligned");
  const AdamWCoefficients coefficients = adamw_coefficients(step.hyper, step.grad_scale);
  const Params p{expert_offsets, experts, a_cols, c_cols, A, B, W, WeightGradEpilogue::kAdamW, step.m, step.v,
                 coefficients, step.decay ? coefficients.decay : 1.0f};
  launch<GroupedLayout::kTN>(p, weight_grad_grid(experts, a_cols, c_cols), stream);
}

}  // namespace moetune::cuda
