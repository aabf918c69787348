// Why: checkpoints arrive in bf16, fp16 or fp32 (and fixtures carry integer ids); the engine computes in fp32 on the CPU.
// This file names the element types safetensors can hold and converts the floating ones to and from fp32 exactly as
// PyTorch does (bf16 rounding: round-to-nearest-even, NaN kept quiet).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

namespace moetune {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

// Size in bytes of one element.
int dtype_size(DType dtype);
// The safetensors spelling: "F32", "BF16", ...
const char* dtype_name(DType dtype);
// Parses a safetensors dtype string; returns false for an unknown one.
bool parse_dtype(const std::string& name, DType* dtype);
bool dtype_is_float(DType dtype);

inline float bf16_to_f32(uint16_t bits) {
  uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &wide, sizeof value);
  return value;
}

inline uint16_t f32_to_bf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);  // quiet NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

float f16_to_f32(uint16_t bits);
uint16_t f32_to_f16(float value);

// Converts `count` elements of a floating type stored at `src` (any alignment) to fp32.
void convert_to_f32(DType src_dtype, const void* src, float* dst, size_t count);
// Converts `count` fp32 values to a floating type at `dst` (any alignment).
void convert_from_f32(DType dst_dtype, const float* src, void* dst, size_t count);

}  // namespace moetune
