// Why: data order and synthetic data must be identical on every platform and standard library, so moetune uses its own
// small, specified primitives over std::mt19937_64 (whose output the standard fixes) instead of
// std::uniform_int_distribution or std::shuffle (whose algorithms differ between libraries).
#pragma once

#include <cstdint>
#include <random>

namespace moetune {

// splitmix64's finalizer: a well-mixed 64-bit hash of a 64-bit value.
inline uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Uniform in [0, bound) without modulo bias (rejects the low `2^64 mod bound` values). bound > 0.
inline uint64_t uniform_below(std::mt19937_64& rng, uint64_t bound) {
  const uint64_t threshold = (0 - bound) % bound;
  for (;;) {
    const uint64_t value = rng();
    if (value >= threshold) return value % bound;
  }
}

}  // namespace moetune
