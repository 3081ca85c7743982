// 16-bit floats, decoded exactly and (bf16) rounded to nearest even: the ref backend's conversions.
#pragma once
#include <cstdint>
#include <cstring>

namespace lora {

inline float bf16_to_f32(uint16_t h) { return __builtin_bit_cast(float, (uint32_t)h << 16); }

// round to nearest even; NaN stays a quiet NaN
inline uint16_t f32_to_bf16(float f) {
  uint32_t x = __builtin_bit_cast(uint32_t, f);
  if ((x & 0x7f800000u) == 0x7f800000u && (x & 0x7fffffu)) return (uint16_t)((x >> 16) | 0x40);
  return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

inline float f16_to_f32(uint16_t h) {
  uint32_t s = (h & 0x8000u) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  if (e == 0) {
    float f = (float)m * 5.9604644775390625e-8f;  // subnormal: m * 2^-24
    return s ? -f : f;
  }
  return __builtin_bit_cast(float, e == 0x1f ? (s | 0x7f800000u | (m << 13)) : (s | ((e + 112) << 23) | (m << 13)));
}

}  // namespace lora
