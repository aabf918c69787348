// Why: one place for element sizes, names and fp32 conversions, so loaders and writers never disagree.
#include "core/dtype.h"

#include <cmath>

#include "core/error.h"

namespace moetune {

namespace {
struct DTypeInfo {
  DType dtype;
  const char* name;
  int size;
  bool is_float;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::F64, "F64", 8, true}, {DType::F32, "F32", 4, true},  {DType::F16, "F16", 2, true},
    {DType::BF16, "BF16", 2, true}, {DType::I64, "I64", 8, false}, {DType::I32, "I32", 4, false},
    {DType::I16, "I16", 2, false}, {DType::I8, "I8", 1, false},   {DType::U8, "U8", 1, false},
    {DType::BOOL, "BOOL", 1, false},
};
const DTypeInfo& info(DType dtype) {
  for (const auto& entry : kDTypes)
    if (entry.dtype == dtype) return entry;
  MT_ASSERT(false);
}
}  // namespace

int dtype_size(DType dtype) { return info(dtype).size; }
const char* dtype_name(DType dtype) { return info(dtype).name; }
bool dtype_is_float(DType dtype) { return info(dtype).is_float; }

bool parse_dtype(const std::string& name, DType* dtype) {
  for (const auto& entry : kDTypes) {
    if (name == entry.name) {
      *dtype = entry.dtype;
      return true;
    }
  }
  return false;
}

float f16_to_f32(uint16_t bits) {
  const uint32_t sign = (bits >> 15) & 1u;
  const uint32_t exponent = (bits >> 10) & 0x1fu;
  const uint32_t mantissa = bits & 0x3ffu;
  float magnitude;
  if (exponent == 0) {
    magnitude = std::ldexp(static_cast<float>(mantissa), -24);
  } else if (exponent == 31) {
    magnitude = mantissa ? NAN : INFINITY;
  } else {
    magnitude = std::ldexp(static_cast<float>(mantissa | 0x400u), static_cast<int>(exponent) - 25);
  }
  return sign ? -magnitude : magnitude;
}

uint16_t f32_to_f16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const uint32_t abs_bits = bits & 0x7fffffffu;
  if (abs_bits > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);
  if (abs_bits >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow (after rounding) -> inf
  if (abs_bits < 0x38800000u) {                                              // subnormal or zero in fp16
    float magnitude;
    std::memcpy(&magnitude, &abs_bits, sizeof magnitude);
    const float scaled = std::nearbyint(magnitude * 16777216.0f);  // units of 2^-24, round-to-nearest-even
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(scaled));
  }
  uint32_t rounded = abs_bits + 0xfffu + ((abs_bits >> 13) & 1u);
  return static_cast<uint16_t>(sign | ((rounded - 0x38000000u) >> 13));
}

void convert_to_f32(DType src_dtype, const void* src, float* dst, size_t count) {
  const auto* bytes = static_cast<const unsigned char*>(src);
  switch (src_dtype) {
    case DType::F32:
      std::memcpy(dst, bytes, count * 4);
      return;
    case DType::F64:
      for (size_t i = 0; i < count; ++i) {
        double value;
        std::memcpy(&value, bytes + 8 * i, 8);
        dst[i] = static_cast<float>(value);
      }
      return;
    case DType::BF16:
    case DType::F16:
      for (size_t i = 0; i < count; ++i) {
        uint16_t half;
        std::memcpy(&half, bytes + 2 * i, 2);
        dst[i] = src_dtype == DType::BF16 ? bf16_to_f32(half) : f16_to_f32(half);
      }
      return;
    default:
      fail("cannot convert ", dtype_name(src_dtype), " to F32: not a floating type");
  }
}

void convert_from_f32(DType dst_dtype, const float* src, void* dst, size_t count) {
  auto* bytes = static_cast<unsigned char*>(dst);
  switch (dst_dtype) {
    case DType::F32:
      std::memcpy(bytes, src, count * 4);
      return;
    case DType::F64:
      for (size_t i = 0; i < count; ++i) {
        const double value = src[i];
        std::memcpy(bytes + 8 * i, &value, 8);
      }
      return;
    case DType::BF16:
    case DType::F16:
      for (size_t i = 0; i < count; ++i) {
        const uint16_t half = dst_dtype == DType::BF16 ? f32_to_bf16(src[i]) : f32_to_f16(src[i]);
        std::memcpy(bytes + 2 * i, &half, 2);
      }
      return;
    default:
      fail("cannot convert F32 to ", dtype_name(dst_dtype), ": not a floating type");
  }
}

}  // namespace moetune
