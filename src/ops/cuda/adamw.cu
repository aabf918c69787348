// Why: see adamw.h. The optimizer kernel cuts the flat buffer into tiles of kTile elements, one block each; a block
// reads its tile's entry in the plan's table: a full tile inside one span (nearly all) carries the span's decay flag and
// goes straight to the data, any other tile names its first span and walks the spans overlapping it. Bandwidth comes
// from occupancy and few instructions per element: the bf16 variant updates each 8-element chunk in its packed
// registers, converts a pair of elements per instruction and is bounded to 32 registers, so eight 256-thread blocks fit
// per SM (a per-block binary search, or four chunks per thread with a quarter of the blocks, each left more of the time
// with no loads in flight).
#include "ops/cuda/adamw.h"

#include <type_traits>

#include "ops/cuda/adamw_element.cuh"

namespace moetune::cuda {
namespace {

constexpr int kThreads = 256;
constexpr size_t kTile = kAdamWTile;
static_assert(kTile == 8 * kThreads, "a thread owns one 8-element chunk of a tile");
constexpr int kNormBlocks = 1024;
constexpr int kNormThreads = 256;


__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ void store(float* p, float x) { *p = x; }
__device__ __forceinline__ void store(bf16* p, float x) { *p = __float2bfloat16(x); }

// Eight consecutive elements through 16-byte loads and stores (the pointers are 16-byte aligned at 8-element chunks).
__device__ __forceinline__ void load8(const bf16* p, float* out) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const bf16* h = reinterpret_cast<const bf16*>(&raw);
#pragma unroll
  for (int j = 0; j < 8; ++j) out[j] = __bfloat162float(h[j]);
}
__device__ __forceinline__ void load8(const float* p, float* out) {
  const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
  out[0] = a.x, out[1] = a.y, out[2] = a.z, out[3] = a.w, out[4] = b.x, out[5] = b.y, out[6] = b.z, out[7] = b.w;
}
__device__ __forceinline__ void store8(bf16* p, const float* in) {
  uint4 raw;
  bf16* h = reinterpret_cast<bf16*>(&raw);
#pragma unroll
  for (int j = 0; j < 8; ++j) h[j] = __float2bfloat16(in[j]);
  *reinterpret_cast<uint4*>(p) = raw;
}
__device__ __forceinline__ void store8(float* p, const float* in) {
  reinterpret_cast<float4*>(p)[0] = make_float4(in[0], in[1], in[2], in[3]);
  reinterpret_cast<float4*>(p)[1] = make_float4(in[4], in[5], in[6], in[7]);
}

// The bf16 variant's 8-element chunk (adamw_element.cuh: updated in its packed registers, 4 x 16 bytes of data per
// thread instead of 32 floats, which keeps the kernel within its register bound).
__device__ __forceinline__ void adamw_chunk_packed(bf16* params, const bf16* grads, bf16* m, bf16* v, size_t chunk,
                                                   float decay, const AdamWCoefficients& c) {
  uint4 p_raw = *reinterpret_cast<const uint4*>(params + chunk), m_raw = *reinterpret_cast<const uint4*>(m + chunk);
  uint4 v_raw = *reinterpret_cast<const uint4*>(v + chunk);
  const uint4 g_raw = *reinterpret_cast<const uint4*>(grads + chunk);
  adamw_bf16x8(p_raw, m_raw, v_raw, g_raw, decay, c);
  *reinterpret_cast<uint4*>(params + chunk) = p_raw;
  *reinterpret_cast<uint4*>(m + chunk) = m_raw;
  *reinterpret_cast<uint4*>(v + chunk) = v_raw;
}

// The tiles that are not one span's whole: thread t's chunk, span by span. A chunk inside one span takes the vector
// path, a chunk cut by a span boundary the scalar one. Not inlined: its registers do not count against the full tiles'
// path of the kernel, which then fits the occupancy bound without spilling.
template <class State>
__device__ __noinline__ void adamw_spans(bf16* params, float* master, const bf16* grads, State* m, State* v,
                                         const AdamWSpan* spans, int first_span, int span_count, size_t chunk,
                                         size_t tile_end, const AdamWCoefficients& c) {
  for (int s = first_span; s < span_count && spans[s].offset < tile_end; ++s) {
    const AdamWSpan span = spans[s];
    const size_t begin = max(chunk, span.offset), end = min(min(tile_end, chunk + 8), span.offset + span.count);
    if (begin >= end) continue;
    const float decay = span.decay ? c.decay : 1.0f;
    if (begin == chunk && end == chunk + 8) {
      if constexpr (std::is_same_v<State, bf16>) {
        adamw_chunk_packed(params, grads, m, v, chunk, decay, c);
      } else {
        float p[8], mi[8], vi[8], g[8];
        load8(master + chunk, p);
        load8(m + chunk, mi);
        load8(v + chunk, vi);
        load8(grads + chunk, g);
#pragma unroll
        for (int j = 0; j < 8; ++j) adamw_element(p[j], mi[j], vi[j], __fmul_rn(g[j], c.grad_scale), decay, c);
        store8(master + chunk, p);
        store8(params + chunk, p);
        store8(m + chunk, mi);
        store8(v + chunk, vi);
      }
      continue;
    }
    for (size_t i = begin; i < end; ++i) {
      float p = master ? master[i] : __bfloat162float(params[i]);
      float mi = to_float(m[i]), vi = to_float(v[i]);
      adamw_element(p, mi, vi, __fmul_rn(__bfloat162float(grads[i]), c.grad_scale), decay, c);
      if (master) master[i] = p;
      params[i] = __float2bfloat16(p);
      store(m + i, mi);
      store(v + i, vi);
    }
  }
}

// master == nullptr: params hold the state (bf16 variant); else master holds it and params get its bf16 copy.
// Thread t of a block owns the 8-element chunk tile_begin + 8t. A full tile inside one span (tile_info >= 0: the span
// index and decay flag without another dependent load) takes the vector path directly; any other tile walks its spans.
template <class State>
__global__ void __launch_bounds__(kThreads, std::is_same_v<State, bf16> ? 8 : 4)
    adamw_kernel(bf16* params, float* master, const bf16* grads, State* m, State* v, const AdamWSpan* spans,
                 const int32_t* tile_info, int span_count, size_t total, AdamWCoefficients c) {
  const size_t tile_begin = blockIdx.x * kTile;
  const size_t chunk = tile_begin + 8 * static_cast<size_t>(threadIdx.x);
  const int32_t info = tile_info[blockIdx.x];
  if constexpr (std::is_same_v<State, bf16>) {
    if (info >= 0) {
      adamw_chunk_packed(params, grads, m, v, chunk, (info & 1) ? c.decay : 1.0f, c);
      return;
    }
  }
  adamw_spans(params, master, grads, m, v, spans, info >= 0 ? info >> 1 : -info - 1, span_count, chunk,
              min(total, tile_begin + kTile), c);
}

__device__ float block_sum(float v) {
  __shared__ float partial[32];
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < static_cast<int>(blockDim.x >> 5) ? partial[lane] : 0.0f;
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

template <class T>
__global__ void sum_squares_partial_kernel(float* partial, const T* values, size_t count) {
  float sum = 0.0f;
  const size_t chunks = count / 8;  // 8-element chunks through 16-byte loads, then the tail
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < chunks;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    float x[8];
    load8(values + 8 * i, x);
#pragma unroll
    for (int j = 0; j < 8; ++j) sum += x[j] * x[j];
  }
  for (size_t i = 8 * chunks + blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const float x = to_float(values[i]);
    sum += x * x;
  }
  sum = block_sum(sum);
  if (threadIdx.x == 0) partial[blockIdx.x] = sum;
}

__global__ void sum_partials_kernel(float* result, const float* partial, int count) {
  float sum = 0.0f;
  for (int i = threadIdx.x; i < count; i += blockDim.x) sum += partial[i];
  sum = block_sum(sum);
  if (threadIdx.x == 0) *result = sum;
}

template <class T>
void launch_grad_norm(const T* grads, size_t count, float* result_device, float* scratch, cudaStream_t stream) {
  sum_squares_partial_kernel<T><<<kNormBlocks, kNormThreads, 0, stream>>>(scratch, grads, count);
  CUDA_CHECK_LAUNCH("sum_squares_partial_kernel");
  sum_partials_kernel<<<1, kNormBlocks, 0, stream>>>(result_device, scratch, kNormBlocks);
  CUDA_CHECK_LAUNCH("sum_partials_kernel");
}

unsigned tiles(size_t total) { return static_cast<unsigned>((total + kTile - 1) / kTile); }

}  // namespace

AdamWPlan::AdamWPlan(const std::vector<AdamWSpan>& spans, size_t total) : spans_(spans), total_(total) {
  std::vector<int32_t> info(tiles(total));
  size_t s = 0;
  for (size_t tile = 0; tile < info.size(); ++tile) {
    const size_t begin = tile * kTile, end = begin + kTile;
    while (s < spans.size() && spans[s].offset + spans[s].count <= begin) ++s;
    const bool whole = end <= total && s < spans.size() && spans[s].offset <= begin && spans[s].offset + spans[s].count >= end;
    info[tile] = whole ? static_cast<int32_t>(2 * s + (spans[s].decay ? 1 : 0)) : -static_cast<int32_t>(s) - 1;
  }
  tile_info_ = DeviceBuffer<int32_t>(info);
}

void adamw_bf16(bf16* params, const bf16* grads, bf16* m, bf16* v, const AdamWPlan& plan, AdamWHyper h,
                float grad_scale, cudaStream_t stream) {
  if (plan.total() == 0 || plan.span_count() <= 0) return;
  adamw_kernel<bf16><<<tiles(plan.total()), kThreads, 0, stream>>>(params, nullptr, grads, m, v, plan.spans(),
                                                                   plan.tile_info(), plan.span_count(),
                                                                   plan.total(), adamw_coefficients(h, grad_scale));
  CUDA_CHECK_LAUNCH("adamw_kernel<bf16>");
}

void adamw_master(bf16* params, float* master, const bf16* grads, float* m, float* v, const AdamWPlan& plan,
                  AdamWHyper h, float grad_scale, cudaStream_t stream) {
  if (plan.total() == 0 || plan.span_count() <= 0) return;
  adamw_kernel<float><<<tiles(plan.total()), kThreads, 0, stream>>>(params, master, grads, m, v, plan.spans(),
                                                                    plan.tile_info(), plan.span_count(),
                                                                    plan.total(), adamw_coefficients(h, grad_scale));
  CUDA_CHECK_LAUNCH("adamw_kernel<float>");
}

size_t grad_norm_scratch_floats() { return kNormBlocks; }

void grad_norm_squared(const bf16* grads, size_t count, float* result_device, float* scratch, cudaStream_t stream) {
  launch_grad_norm(grads, count, result_device, scratch, stream);
}

void grad_norm_squared(const float* grads, size_t count, float* result_device, float* scratch, cudaStream_t stream) {
  launch_grad_norm(grads, count, result_device, scratch, stream);
}

}  // namespace moetune::cuda
