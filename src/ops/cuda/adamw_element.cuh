// Why: AdamW's per-element arithmetic, shared by the optimizer kernels (ops/cuda/adamw.cu) and the expert
// weight-gradient GEMM that steps the experts in its epilogue (ops/cuda/grouped_gemm.cu): both must give the same bits
// for the same gradient, so there is one definition of the step's constants and of the element update.
//
// The element arithmetic is the CPU twin's formula (ops/cpu/adamw.h) with its divisions turned into products and fused
// multiply-adds, the hardware's square root and reciprocal (one MUFU instruction each, within 2 ulp) and the step's
// constants folded on the host. Every operation is spelled out (the _rn intrinsics are never contracted), so the
// result does not depend on how the compiler fuses the code around each call.
#pragma once

#include <cuda_bf16.h>

#include <cmath>

#include "ops/cpu/adamw.h"

namespace moetune::cuda {

struct AdamWCoefficients {
  float decay, beta2, one_minus_beta1, one_minus_beta2, neg_step_size, inv_bias_correction2_sqrt, eps, grad_scale;
};

// The CPU twin's step constants, computed in double and rounded once.
inline AdamWCoefficients adamw_coefficients(const cpu::AdamWHyper& h, float grad_scale) {
  const double bias_correction1 = 1.0 - std::pow(h.beta1, static_cast<double>(h.step));
  const double bias_correction2 = 1.0 - std::pow(h.beta2, static_cast<double>(h.step));
  return {static_cast<float>(1.0 - h.lr * h.weight_decay), static_cast<float>(h.beta2),
          static_cast<float>(1.0 - h.beta1), static_cast<float>(1.0 - h.beta2),
          static_cast<float>(-h.lr / bias_correction1), static_cast<float>(1.0 / std::sqrt(bias_correction2)),
          static_cast<float>(h.eps), grad_scale};
}

#ifdef __CUDACC__
__device__ __forceinline__ float adamw_sqrt_approx(float x) {
  float y;
  asm("sqrt.approx.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float adamw_reciprocal_approx(float x) {
  float y;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// One element; g is the gradient already multiplied by grad_scale, decay is c.decay or 1 (no decay).
__device__ __forceinline__ void adamw_element(float& p, float& m, float& v, float g, float decay,
                                              const AdamWCoefficients& c) {
  p = __fmul_rn(p, decay);
  m = fmaf(__fsub_rn(g, m), c.one_minus_beta1, m);
  v = fmaf(v, c.beta2, __fmul_rn(__fmul_rn(c.one_minus_beta2, g), g));
  const float denom = fmaf(adamw_sqrt_approx(v), c.inv_bias_correction2_sqrt, c.eps);
  p = fmaf(__fmul_rn(c.neg_step_size, m), adamw_reciprocal_approx(denom), p);
}

// Eight consecutive bf16 elements in their packed registers (16 bytes each of parameters, moments and gradients),
// updated in place and converted a pair at a time.
__device__ __forceinline__ void adamw_bf16x8(uint4& p_raw, uint4& m_raw, uint4& v_raw, const uint4& g_raw, float decay,
                                             const AdamWCoefficients& c) {
  __nv_bfloat162* p = reinterpret_cast<__nv_bfloat162*>(&p_raw);
  __nv_bfloat162* mi = reinterpret_cast<__nv_bfloat162*>(&m_raw);
  __nv_bfloat162* vi = reinterpret_cast<__nv_bfloat162*>(&v_raw);
  const __nv_bfloat162* g = reinterpret_cast<const __nv_bfloat162*>(&g_raw);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    float2 pj = __bfloat1622float2(p[j]), mj = __bfloat1622float2(mi[j]), vj = __bfloat1622float2(vi[j]);
    const float2 gj = __bfloat1622float2(g[j]);
    adamw_element(pj.x, mj.x, vj.x, __fmul_rn(gj.x, c.grad_scale), decay, c);
    adamw_element(pj.y, mj.y, vj.y, __fmul_rn(gj.y, c.grad_scale), decay, c);
    p[j] = __floats2bfloat162_rn(pj.x, pj.y);
    mi[j] = __floats2bfloat162_rn(mj.x, mj.y);
    vi[j] = __floats2bfloat162_rn(vj.x, vj.y);
  }
}
#endif

}  // namespace moetune::cuda
