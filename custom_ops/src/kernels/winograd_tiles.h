// Winograd F(2x2, 3x3) tile transforms (kernels/winograd.h), compiled once per ISA: winograd.cc (baseline),
// sgemm_avx2.cc and sgemm_avx512.cc include this file and list the functions in their MicroKernel, so forcing a
// kernel also runs its transforms. Everything here is internal to the including file (anonymous namespace, no
// library templates), so that no ISA's copy can stand in for another's at link time.
#pragma once

#include <cstdint>
#include <cstring>

#include "kernels/microkernel.h"

namespace inq {
namespace {

// 16 floats as one GCC vector: each including file compiles it to its ISA's registers (one zmm, two ymm, four
// xmm). The helpers taking and returning it are always inlined, so GCC's note on its calling convention does not
// apply (GCC gives it at the end of the including file, hence no push / pop).
#pragma GCC diagnostic ignored "-Wpsabi"
typedef float F16 __attribute__((vector_size(64)));
typedef int I16 __attribute__((vector_size(64)));

template <class T>
__attribute__((always_inline)) inline T load(const float* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <class T>
__attribute__((always_inline)) inline void store(float* p, const T& v) {
  std::memcpy(p, &v, sizeof v);
}

// Tiles k..k+W-1 (W = 1 or 16, T = float or F16) of input_tiles.
template <class T>
__attribute__((always_inline)) inline void input_step(int64_t k, const float* const* e, const float* const* o,
                                                      float* v, int64_t xs) {
  T r[4][4];
  for (int i = 0; i < 4; ++i) {  // d B along each patch row: (d0 - d2, d1 + d2, d2 - d1, d1 - d3)
    const T d0 = load<T>(e[i] + k), d1 = load<T>(o[i] + k), d2 = load<T>(e[i] + k + 1), d3 = load<T>(o[i] + k + 1);
    r[i][0] = d0 - d2, r[i][1] = d1 + d2, r[i][2] = d2 - d1, r[i][3] = d1 - d3;
  }
  for (int b = 0; b < 4; ++b) {  // B^T along each column: (r0 - r2, r1 + r2, r2 - r1, r1 - r3)
    store<T>(v + (0 + b) * xs + k, r[0][b] - r[2][b]);
    store<T>(v + (4 + b) * xs + k, r[1][b] + r[2][b]);
    store<T>(v + (8 + b) * xs + k, r[2][b] - r[1][b]);
    store<T>(v + (12 + b) * xs + k, r[1][b] - r[3][b]);
  }
}

// `len` consecutive tiles of one tile row and one input channel. Patch row i comes as its even and odd columns
// (e[i], o[i]): tile k's row is e[k], o[k], e[k + 1], o[k + 1], so that every load is a contiguous run across
// tiles. V = B^T d B goes to v[xi * xs + k], xi = 4a + b. Tile rows are short (7 tiles at 14x14), so whole
// vectors are computed while v has `room` columns for them: the lanes past `len` read further along the strip
// and write columns that a later run (or the caller) overwrites.
void input_tiles(const float* const* e, const float* const* o, int64_t len, int64_t room, float* v, int64_t xs) {
  int64_t k = 0;
  for (; k < len && k + 16 <= room; k += 16) input_step<F16>(k, e, o, v, xs);
  for (; k < len; ++k) input_step<float>(k, e, o, v, xs);
}

__attribute__((always_inline)) inline float clamp_to(float v, float lo, float hi) {
  const float l = v < lo ? lo : v;  // std::min(std::max(v, lo), hi), written out: no library templates here
  return l > hi ? hi : l;
}
__attribute__((always_inline)) inline F16 clamp_to(const F16& v, float lo, float hi) {
  // As std::min(std::max(v, lo), hi) lane by lane (a NaN stays NaN).
  const F16 l = v < lo ? F16{} + lo : v;
  return l > hi ? F16{} + hi : l;
}

// Output columns 2k, 2k + 1 of W tiles: scalar pair, or 16 pairs interleaved into 32 floats.
__attribute__((always_inline)) inline void store_pairs(float* y, int64_t k, float a, float b) {
  y[2 * k] = a, y[2 * k + 1] = b;
}
__attribute__((always_inline)) inline void store_pairs(float* y, int64_t k, const F16& a, const F16& b) {
  const I16 lo = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23};
  const I16 hi = {8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  store<F16>(y + 2 * k, __builtin_shuffle(a, b, lo));
  store<F16>(y + 2 * k + 16, __builtin_shuffle(a, b, hi));
}
__attribute__((always_inline)) inline void load_pairs(const float* z, int64_t k, float* a, float* b) {
  *a = z[2 * k], *b = z[2 * k + 1];
}
__attribute__((always_inline)) inline void load_pairs(const float* z, int64_t k, F16* a, F16* b) {
  const F16 p = load<F16>(z + 2 * k), q = load<F16>(z + 2 * k + 16);
  const I16 even = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30};
  const I16 odd = {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31};
  *a = __builtin_shuffle(p, q, even), *b = __builtin_shuffle(p, q, odd);
}

// Tiles k..k+W-1 of output_tiles.
template <class T, bool Summand, bool Clamp>
__attribute__((always_inline)) inline void output_step(int64_t k, const float* m, int64_t xs, float bias,
                                                       const float* z0, const float* z1, float lo, float hi,
                                                       float* y0, float* y1) {
  T f[4][2];
  for (int a = 0; a < 4; ++a) {  // M A along each row: (m0 + m1 + m2, m1 - m2 - m3)
    const T m0 = load<T>(m + (4 * a) * xs + k), m1 = load<T>(m + (4 * a + 1) * xs + k);
    const T m2 = load<T>(m + (4 * a + 2) * xs + k), m3 = load<T>(m + (4 * a + 3) * xs + k);
    f[a][0] = m0 + m1 + m2, f[a][1] = m1 - m2 - m3;
  }
  T out[2][2];
  for (int b = 0; b < 2; ++b) {  // A^T along each column
    out[0][b] = f[0][b] + f[1][b] + f[2][b] + bias;
    out[1][b] = f[1][b] - f[2][b] - f[3][b] + bias;
  }
  if (Summand) {
    T z[2][2];
    load_pairs(z0, k, &z[0][0], &z[0][1]);
    load_pairs(z1, k, &z[1][0], &z[1][1]);
    for (int r = 0; r < 2; ++r)
      for (int b = 0; b < 2; ++b) out[r][b] = out[r][b] + z[r][b];
  }
  if (Clamp)
    for (int r = 0; r < 2; ++r)
      for (int b = 0; b < 2; ++b) out[r][b] = clamp_to(out[r][b], lo, hi);
  store_pairs(y0, k, out[0][0], out[0][1]);
  store_pairs(y1, k, out[1][0], out[1][1]);
}

// `len` consecutive tiles of one tile row and one output channel: Y = A^T M A from m[xi * xs + k], then bias,
// summand and activation as Epilogue::apply, into output rows y0 (columns 2k, 2k + 1) and y1 below it. Whole
// vectors throughout (m has 16 columns of slack): a partial one goes through a local copy of its outputs (and
// of its summand), so nothing outside the tiles' outputs is read or written.
template <bool Summand, bool Clamp>
void output_tiles(const float* m, int64_t xs, int64_t len, float bias, const float* z0, const float* z1,
                             float lo, float hi, float* y0, float* y1) {
  int64_t k = 0;
  for (; k + 16 <= len; k += 16) output_step<F16, Summand, Clamp>(k, m, xs, bias, z0, z1, lo, hi, y0, y1);
  if (k == len) return;
  const int64_t n = 2 * (len - k);
  float zt[2][32] = {}, yt[2][32];
  if (Summand) std::memcpy(zt[0], z0 + 2 * k, n * sizeof(float)), std::memcpy(zt[1], z1 + 2 * k, n * sizeof(float));
  output_step<F16, Summand, Clamp>(0, m + k, xs, bias, zt[0], zt[1], lo, hi, yt[0], yt[1]);
  std::memcpy(y0 + 2 * k, yt[0], n * sizeof(float));
  std::memcpy(y1 + 2 * k, yt[1], n * sizeof(float));
}

// This file's transforms, as a MicroKernel lists them.
inline WinogradTiles winograd_tiles() {
  WinogradTiles t;
  t.input = input_tiles;
  t.output[0][0] = output_tiles<false, false>, t.output[0][1] = output_tiles<false, true>;
  t.output[1][0] = output_tiles<true, false>, t.output[1][1] = output_tiles<true, true>;
  return t;
}

}  // namespace
}  // namespace inq
