// Panel kernels of the code GEMV (code_gemv.h), shared by the driver and the per-ISA files. Plain data only:
// the ISA files include nothing else, so no inline library code is compiled with their ISA flags.
//
// Weights are pre-packed in panels of kCgPanel = 64 output columns; panel p holds columns [64p, 64p + 64)
// (past N: code 0 = weight 0) and is contiguous, so a task over a range of panels streams one block of memory.
#pragma once

#include <cstdint>

namespace inq {

constexpr int kCgPanel = 64;
constexpr int kCgMaxRows = 4;  // rows of A per kernel call

// Float-mode layouts (one row of depth k after the other), code = sign << s | m, value table[code]:
//   kCgNib: m <= 7, 32 bytes per k; byte 16g + j holds column 32g + j (low nibble) and 32g + 16 + j (high).
//   kCgB5:  m <= 15, 64 bytes per k; byte j holds column j, code = sign << 4 | m.
//   kCgB8:  m <= 127, 64 bytes per k; byte j holds column j, code = sign << 7 | m.
enum CgFloatLayout : int { kCgNib = 0, kCgB5 = 1, kCgB8 = 2 };
// Integer-mode layouts, depth in quads of 4 (k padded with weight 0):
//   kCgINib: levels in [-64, 64]; 128 bytes per quad; byte 64h + 4l + q holds depth 4kq + q of column
//            32h + l (low nibble, l < 16) and 32h + 16 + l (high); code = sign << 3 | j, level +-2^(j-1).
//   kCgISplit: levels in [-128, 128]; 256 bytes per quad; byte 64h + 4l + q holds column 16h + l;
//            code = sign << 4 | j (j <= 8), level +-2^(j-1).
enum CgIntLayout : int { kCgINib = 0, kCgISplit = 1 };

struct CgFloatArgs {
  const uint8_t* codes;  // panel start
  int64_t k;
  int layout;           // CgFloatLayout
  const float* table;   // 256 floats: value of each stored code (+-2^(m-1-c), 0 for m = 0)
  int32_t exp_bias;     // kCgB8: float exponent field of code m is m + exp_bias
  const float* a;       // rows of A (m x k, row stride lda)
  int64_t lda;
  int m;                // 1..kCgMaxRows
  float* acc;           // out: m x kCgPanel, sum_k a[i, k] * table[code(k, j)]
};

struct CgIntArgs {
  const uint8_t* codes;  // panel start
  int64_t kq;            // depth quads
  int layout;            // CgIntLayout
  const int16_t* levels; // 256 entries: level of each stored code (scalar kernels)
  const uint8_t* vtab;   // 192 bytes for the SIMD kernels: [0, 64) kCgINib s8 levels of codes 0..15, repeated
                         // in each 16-byte lane; [64, 128) / [128, 192) kCgISplit max(level, 0) / max(-level, 0)
  const uint8_t* aq;     // quantized rows (m x 4kq bytes, row stride ldq): kCgINib u8 x_q, kCgISplit x_q ^ 0x80
  int64_t ldq;
  int m;                 // 1..kCgMaxRows
  int32_t* acc;          // out: m x kCgPanel; kCgINib: sum x_q * level, kCgISplit: sum (x_q - 128) * level
};

using CgFloatFn = void (*)(const CgFloatArgs&);
using CgIntFn = void (*)(const CgIntArgs&);
// Writes saturate(round_half_even(x[i] / scale) + zp) ^ flip for i < n (QuantizeLinear to u8).
using CgQuantizeFn = void (*)(const float* x, int64_t n, float scale, int zp, uint8_t flip, uint8_t* out);

}  // namespace inq
