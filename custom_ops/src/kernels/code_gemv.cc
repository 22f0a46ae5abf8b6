// Code GEMV driver: packing of the codes, ISA dispatch, the portable kernels, quantization and the epilogue.
#include "kernels/code_gemv.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>

#include "kernels/cpu_features.h"
#include "kernels/packed_weights.h"

namespace inq {

#if defined(INQ_HAVE_X86_KERNELS)
void cg_float_avx512(const CgFloatArgs& g);
void cg_float_avx2(const CgFloatArgs& g);
void cg_int_avx512(const CgIntArgs& g);
void cg_quantize_avx512(const float* x, int64_t n, float scale, int zp, uint8_t flip, uint8_t* out);
#endif

namespace {

struct CgCpu {
  bool avx2 = false, avx512 = false, vnni = false, vbmi = false;
};

const CgCpu& cpu() {
  static const CgCpu c = [] {
    CgCpu r;
#if defined(INQ_HAVE_X86_KERNELS) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    r.avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    r.avx512 = r.avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    r.vnni = r.avx512 && __builtin_cpu_supports("avx512vnni");
    r.vbmi = r.avx512 && __builtin_cpu_supports("avx512vbmi");
#endif
    return r;
  }();
  return c;
}

// Bit-stream reader of docs/ops.md (LSB first).
struct CodeReader {
  const uint8_t* p;
  int64_t bytes;
  int bits;
  unsigned code(int64_t i) const {
    const int64_t bit = i * bits, byte = bit >> 3;
    unsigned word = p[byte];
    if (byte + 1 < bytes) word |= static_cast<unsigned>(p[byte + 1]) << 8;
    return (word >> (bit & 7)) & ((1u << bits) - 1u);
  }
};

// Calls f(k, n, sign, m) for every weight in stream order.
template <class F>
void for_each_code(const CodeWeights& w, const F& f) {
  const CodeReader rd{w.packed, w.packed_bytes, w.bits};
  const unsigned mmask = (1u << (w.bits - 1)) - 1u;
  const int64_t outer = w.trans ? w.n : w.k, inner = w.trans ? w.k : w.n;
  int64_t i = 0;
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t in = 0; in < inner; ++in, ++i) {
      const unsigned c = rd.code(i);
      const unsigned m = c & mmask;
      const unsigned s = m ? (c >> (w.bits - 1)) & 1u : 0u;  // -0 decodes to 0
      if (w.trans) f(in, o, s, m);
      else f(o, in, s, m);
    }
}

std::string check_weights(const CodeWeights& w) {
  if (w.bits < kMinBits || w.bits > kMaxBits) return "bits must be in 2..8, got " + std::to_string(w.bits);
  if (w.k < 0 || w.n < 0) return "negative weight dimension";
  if (!w.packed && w.packed_bytes) return "null packed weights";
  const std::vector<int64_t> shape = w.trans ? std::vector<int64_t>{w.n, w.k} : std::vector<int64_t>{w.k, w.n};
  std::string err = check_packed_size(w.packed_bytes, w.bits, shape);
  if (!err.empty()) return err;
  if (w.exponent_base.size() != 1 && static_cast<int64_t>(w.exponent_base.size()) != w.n)
    return "exponent_base has " + std::to_string(w.exponent_base.size()) + " values; expected 1 or " +
           std::to_string(w.n);
  return check_exponent_base(w.exponent_base);
}

int64_t base_of(const CodeWeights& w, int64_t col) {
  return w.exponent_base.size() == 1 ? w.exponent_base[0] : w.exponent_base[col];
}

// Runs `body(task)` over `tasks` tasks, turning exceptions into an error message.
template <class F>
std::string run_tasks(const TaskRunner& runner, size_t tasks, const F& body) {
  try {
    runner.run(tasks, body);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "code GEMV task failed";
  }
  return {};
}

// Tasks of contiguous panel ranges: enough to balance a few threads, each still streaming >= 1 panel.
size_t task_count(int64_t panels) { return static_cast<size_t>(std::min<int64_t>(panels, 16)); }

// ---- portable kernels --------------------------------------------------------------------------------------

void cg_float_generic(const CgFloatArgs& g) {
  float acc[kCgMaxRows][kCgPanel] = {};
  float w[kCgPanel];
  const uint8_t* p = g.codes;
  for (int64_t k = 0; k < g.k; ++k) {
    if (g.layout == kCgNib) {
      for (int h = 0; h < 2; ++h)
        for (int j = 0; j < 16; ++j) {
          const unsigned b = p[16 * h + j];
          w[32 * h + j] = g.table[b & 15u];
          w[32 * h + 16 + j] = g.table[b >> 4];
        }
      p += 32;
    } else {
      for (int j = 0; j < kCgPanel; ++j) w[j] = g.table[p[j]];
      p += 64;
    }
    for (int i = 0; i < g.m; ++i) {
      const float ai = g.a[i * g.lda + k];
      for (int j = 0; j < kCgPanel; ++j) acc[i][j] += ai * w[j];
    }
  }
  for (int i = 0; i < g.m; ++i) std::memcpy(g.acc + i * kCgPanel, acc[i], sizeof(acc[i]));
}

void cg_int_generic(const CgIntArgs& g) {
  int32_t acc[kCgMaxRows][kCgPanel] = {};
  const uint8_t* p = g.codes;
  const bool split = g.layout == kCgISplit;
  for (int64_t q = 0; q < g.kq; ++q) {
    int32_t x[kCgMaxRows][4];
    for (int i = 0; i < g.m; ++i)
      for (int t = 0; t < 4; ++t) {
        const uint8_t b = g.aq[i * g.ldq + 4 * q + t];
        x[i][t] = split ? static_cast<int8_t>(b) : b;
      }
    if (!split) {
      for (int h = 0; h < 2; ++h)
        for (int l = 0; l < 16; ++l)
          for (int t = 0; t < 4; ++t) {
            const unsigned b = p[64 * h + 4 * l + t];
            const int32_t lo = g.levels[b & 15u], hi = g.levels[b >> 4];
            for (int i = 0; i < g.m; ++i) {
              acc[i][32 * h + l] += x[i][t] * lo;
              acc[i][32 * h + 16 + l] += x[i][t] * hi;
            }
          }
      p += 128;
    } else {
      for (int h = 0; h < 4; ++h)
        for (int l = 0; l < 16; ++l)
          for (int t = 0; t < 4; ++t) {
            const int32_t lv = g.levels[p[64 * h + 4 * l + t]];
            for (int i = 0; i < g.m; ++i) acc[i][16 * h + l] += x[i][t] * lv;
          }
      p += 256;
    }
  }
  for (int i = 0; i < g.m; ++i) std::memcpy(g.acc + i * kCgPanel, acc[i], sizeof(acc[i]));
}

void cg_quantize_generic(const float* x, int64_t n, float scale, int zp, uint8_t flip, uint8_t* out) {
  const float z = static_cast<float>(zp);
  for (int64_t i = 0; i < n; ++i) {
    float v = std::nearbyint(x[i] / scale) + z;  // default rounding mode: half to even
    v = v > 0.0f ? v : 0.0f;                     // NaN -> 0, as the SIMD max does
    v = v < 255.0f ? v : 255.0f;
    out[i] = static_cast<uint8_t>(static_cast<int>(v)) ^ flip;
  }
}

CgFloatFn float_kernel(CodeIsa isa) {
#if defined(INQ_HAVE_X86_KERNELS)
  if (isa == CodeIsa::kAvx512) return cg_float_avx512;
  if (isa == CodeIsa::kAvx2) return cg_float_avx2;
#endif
  (void)isa;
  return cg_float_generic;
}

}  // namespace

// ---- dispatch -----------------------------------------------------------------------------------------------

const char* code_isa_name(CodeIsa isa) {
  switch (isa) {
    case CodeIsa::kAvx512: return "avx512";
    case CodeIsa::kAvx2: return "avx2";
    default: return "generic";
  }
}

bool code_isa_supported(CodeIsa isa, bool integer_mode) {
  switch (isa) {
    case CodeIsa::kGeneric: return true;
    case CodeIsa::kAvx2: return !integer_mode && cpu().avx2;  // no AVX2 integer kernel (yet)
    case CodeIsa::kAvx512: return integer_mode ? cpu().vnni : cpu().avx512;
  }
  return false;
}

CodeIsa code_float_isa() {
  static const CodeIsa isa = [] {
    // detected_isa() applies INQ_ONNX_ISA (and knows AVX2/AVX-512F); we additionally need BW/VL/DQ.
    const Isa cap = detected_isa();
    if (cap == Isa::kAvx512 && code_isa_supported(CodeIsa::kAvx512, false)) return CodeIsa::kAvx512;
    if (cap >= Isa::kAvx2 && code_isa_supported(CodeIsa::kAvx2, false)) return CodeIsa::kAvx2;
    return CodeIsa::kGeneric;
  }();
  return isa;
}

CodeIsa code_int_isa() {
  static const CodeIsa isa = [] {
    // detected_qisa() applies INQ_ONNX_QISA (generic | avx2 | avx512vnni).
    const QIsa qcap = detected_qisa();
    const CodeIsa cap = qcap == QIsa::kAvx512Vnni ? CodeIsa::kAvx512
                        : qcap == QIsa::kAvx2     ? CodeIsa::kAvx2
                                                  : CodeIsa::kGeneric;
    if (cap == CodeIsa::kAvx512 && code_isa_supported(CodeIsa::kAvx512, true)) return CodeIsa::kAvx512;
    if (cap >= CodeIsa::kAvx2 && code_isa_supported(CodeIsa::kAvx2, true)) return CodeIsa::kAvx2;
    return CodeIsa::kGeneric;
  }();
  return isa;
}

void CodeBuffer::Free::operator()(uint8_t* p) const { std::free(p); }

bool CodeBuffer::allocate(size_t bytes) {
  data_.reset();
  size_ = 0;
  const size_t rounded = (bytes + 63) / 64 * 64;
  if (rounded == 0) return true;
  void* p = std::aligned_alloc(64, rounded);
  if (!p) return false;
  std::memset(p, 0, rounded);
  data_.reset(static_cast<uint8_t*>(p));
  size_ = bytes;
  return true;
}

// ---- float mode ---------------------------------------------------------------------------------------------

std::string CodeGemvFloat::prepare(const CodeWeights& w) {
  try {
    std::string err = check_weights(w);
    if (!err.empty()) return err;
    k_ = w.k, n_ = w.n;
    // Magnitude indices used (m = 0 is weight 0).
    unsigned m_lo = 0, m_hi = 0;
    for_each_code(w, [&](int64_t, int64_t, unsigned, unsigned m) {
      if (!m) return;
      if (!m_lo || m < m_lo) m_lo = m;
      if (m > m_hi) m_hi = m;
    });
    layout_ = m_hi <= 7 ? kCgNib : (m_hi <= 15 ? kCgB5 : kCgB8);
    const int c = m_hi ? static_cast<int>(m_lo + m_hi) / 2 - 1 : 0;  // table values 2^(m-1-c) centred on 1
    exp_bias_ = 126 - c;
    const int sign_shift = layout_ == kCgNib ? 3 : (layout_ == kCgB5 ? 4 : 7);
    table_.assign(256, 0.0f);
    for (unsigned code = 0; code < (2u << sign_shift); ++code) {
      const unsigned m = code & ((1u << sign_shift) - 1u);
      if (!m) continue;
      const float v = std::ldexp(1.0f, static_cast<int>(m) - 1 - c);
      table_[code] = (code >> sign_shift) ? -v : v;
    }
    col_scale_.resize(static_cast<size_t>(n_));
    for (int64_t j = 0; j < n_; ++j) col_scale_[j] = std::ldexp(1.0, static_cast<int>(base_of(w, j)) + c);

    panels_ = (n_ + kCgPanel - 1) / kCgPanel;
    const int64_t row_bytes = layout_ == kCgNib ? kCgPanel / 2 : kCgPanel;
    panel_bytes_ = k_ * row_bytes;
    if (!codes_.allocate(static_cast<size_t>(panels_ * panel_bytes_)))
      return "out of memory packing " + std::to_string(panels_ * panel_bytes_) + " bytes of weight codes";
    uint8_t* dst = codes_.data();
    const int64_t pb = panel_bytes_;
    const int layout = layout_;
    for_each_code(w, [&](int64_t k, int64_t n, unsigned s, unsigned m) {
      const int64_t j = n % kCgPanel;
      uint8_t* row = dst + (n / kCgPanel) * pb + k * row_bytes;
      if (layout == kCgNib) {
        const int64_t r = j % 32;
        row[16 * (j / 32) + r % 16] |= static_cast<uint8_t>((s << 3 | m) << (r >= 16 ? 4 : 0));
      } else {
        row[j] = static_cast<uint8_t>(s << sign_shift | m);
      }
    });
  } catch (const std::bad_alloc&) {
    return "out of memory packing weight codes";
  }
  return {};
}

std::string CodeGemvFloat::run(const float* a, int64_t lda, int64_t m, float alpha, const Epilogue& ep, float* y,
                               int64_t ldy, const TaskRunner& runner, CodeIsa isa) const {
  if (m <= 0 || n_ == 0) return {};
  if (!code_isa_supported(isa, false)) return std::string("code GEMV: ISA ") + code_isa_name(isa) + " not supported";
  const CgFloatFn fn = float_kernel(isa);
  const int64_t panels = panels_;
  const size_t tasks = task_count(panels);
  const double alpha_d = alpha;
  return run_tasks(runner, tasks, [&](size_t t) {
    const int64_t p0 = panels * static_cast<int64_t>(t) / static_cast<int64_t>(tasks);
    const int64_t p1 = panels * static_cast<int64_t>(t + 1) / static_cast<int64_t>(tasks);
    alignas(64) float acc[kCgMaxRows * kCgPanel];
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t n0 = p * kCgPanel, nw = std::min<int64_t>(kCgPanel, n_ - n0);
      for (int64_t i0 = 0; i0 < m; i0 += kCgMaxRows) {
        CgFloatArgs g;
        g.codes = codes_.data() + p * panel_bytes_;
        g.k = k_;
        g.layout = layout_;
        g.table = table_.data();
        g.exp_bias = exp_bias_;
        g.a = a + i0 * lda;
        g.lda = lda;
        g.m = static_cast<int>(std::min<int64_t>(kCgMaxRows, m - i0));
        g.acc = acc;
        fn(g);
        for (int r = 0; r < g.m; ++r) {
          float* yr = y + (i0 + r) * ldy;
          for (int64_t j = 0; j < nw; ++j) {
            const int64_t n = n0 + j;
            // alpha * 2^(e_n + c) is exact in double; one rounding to float.
            const float v = static_cast<float>(static_cast<double>(acc[r * kCgPanel + j]) * (alpha_d * col_scale_[n]));
            yr[n] = ep.apply(v, n, (i0 + r) * ldy + n);
          }
        }
      }
    }
  });
}

// ---- integer mode -------------------------------------------------------------------------------------------

void code_dynamic_quant(const float* a, int64_t lda, int64_t m, int64_t k, CodeQuant* out) {
  float lo = 0.0f, hi = 0.0f;  // the range always includes 0
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < k; ++j) {
      const float v = a[i * lda + j];
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
  const float scale = hi == lo ? 1.0f : (hi - lo) / 255.0f;
  const float zp = std::max(0.0f, std::min(255.0f, 0.0f - lo / scale));
  out->scale = scale;
  out->zero_point = static_cast<int>(std::nearbyint(zp));
}

std::string CodeGemvInt::prepare(const CodeWeights& w) {
  try {
    std::string err = check_weights(w);
    if (!err.empty()) return err;
    k_ = w.k, n_ = w.n;
    std::vector<uint8_t> lo(static_cast<size_t>(n_), 0), hi(static_cast<size_t>(n_), 0);
    for_each_code(w, [&](int64_t, int64_t n, unsigned, unsigned m) {
      if (!m) return;
      if (!lo[n] || m < lo[n]) lo[n] = static_cast<uint8_t>(m);
      if (m > hi[n]) hi[n] = static_cast<uint8_t>(m);
    });
    int spread = 0;
    for (int64_t n = 0; n < n_; ++n) {
      const int s = hi[n] - lo[n];
      if (s > 7)
        return "integer mode: column " + std::to_string(n) + " uses weights from 2^" +
               std::to_string(base_of(w, n) + lo[n] - 1) + " to 2^" + std::to_string(base_of(w, n) + hi[n] - 1) +
               " (more than 8 powers of two), which 8-bit integer levels cannot hold; use float mode";
      spread = std::max(spread, s);
    }
    layout_ = spread <= 6 ? kCgINib : kCgISplit;
    const int64_t lmax = int64_t{1} << spread;
    // |d| <= K * 255 * max|level| must fit int32 (and so must each signed partial sum).
    if (k_ > 0 && k_ * 255 * lmax >= (int64_t{1} << 31))
      return "integer mode: K = " + std::to_string(k_) + " with levels up to " + std::to_string(lmax) +
             " could overflow int32 accumulators; use float mode";
    kq_ = (k_ + 3) / 4;
    unit_exp_.resize(static_cast<size_t>(n_));
    unit_scale_.resize(static_cast<size_t>(n_));
    for (int64_t n = 0; n < n_; ++n) {
      unit_exp_[n] = static_cast<int>(base_of(w, n)) + (lo[n] ? lo[n] - 1 : 0);
      unit_scale_[n] = std::ldexp(1.0, unit_exp_[n]);
    }
    const int sign_shift = layout_ == kCgINib ? 3 : 4;
    const unsigned jmax = layout_ == kCgINib ? 7 : 8;
    levels_.assign(256, 0);
    for (unsigned code = 0; code < (2u << sign_shift); ++code) {
      const unsigned j = code & ((1u << sign_shift) - 1u);
      if (!j || j > jmax) continue;
      const int lv = 1 << (j - 1);
      levels_[code] = static_cast<int16_t>((code >> sign_shift) ? -lv : lv);
    }
    vtab_.assign(192, 0);
    for (int c = 0; c < 64; ++c) {
      if (layout_ == kCgINib) vtab_[c] = static_cast<uint8_t>(static_cast<int8_t>(levels_[c % 16]));
      vtab_[64 + c] = static_cast<uint8_t>(std::max<int>(levels_[c], 0));
      vtab_[128 + c] = static_cast<uint8_t>(std::max<int>(-levels_[c], 0));
    }

    panels_ = (n_ + kCgPanel - 1) / kCgPanel;
    const int64_t quad_bytes = layout_ == kCgINib ? 128 : 256;
    panel_bytes_ = kq_ * quad_bytes;
    if (!codes_.allocate(static_cast<size_t>(panels_ * panel_bytes_)))
      return "out of memory packing " + std::to_string(panels_ * panel_bytes_) + " bytes of weight codes";
    colsum_.assign(static_cast<size_t>(n_), 0);
    uint8_t* dst = codes_.data();
    const int64_t pb = panel_bytes_;
    const bool nib = layout_ == kCgINib;
    for_each_code(w, [&](int64_t k, int64_t n, unsigned s, unsigned m) {
      const unsigned j = m ? m - (lo[n] - 1) : 0;  // 1..jmax
      const unsigned code = s << sign_shift | j;
      colsum_[n] += levels_[code];
      const int64_t c = n % kCgPanel;
      uint8_t* quad = dst + (n / kCgPanel) * pb + (k / 4) * quad_bytes;
      const int64_t t = k % 4;
      if (nib) {
        const int64_t r = c % 32;
        quad[64 * (c / 32) + 4 * (r % 16) + t] |= static_cast<uint8_t>(code << (r >= 16 ? 4 : 0));
      } else {
        quad[64 * (c / 16) + 4 * (c % 16) + t] = static_cast<uint8_t>(code);
      }
    });
  } catch (const std::bad_alloc&) {
    return "out of memory packing weight codes";
  }
  return {};
}

std::string CodeGemvInt::run(const float* a, int64_t lda, int64_t m, CodeQuant quant, float alpha, const Epilogue& ep,
                             float* y, int64_t ldy, const TaskRunner& runner, CodeIsa isa, CodeQuant* used) const {
  if (!code_isa_supported(isa, true)) return std::string("code GEMV: ISA ") + code_isa_name(isa) + " not supported";
  if (!std::isfinite(quant.scale)) return "code GEMV: input scale is not finite";
  if (quant.scale > 0.0f && (quant.zero_point < 0 || quant.zero_point > 255))
    return "code GEMV: input zero point " + std::to_string(quant.zero_point) + " is outside 0..255";
  if (!(quant.scale > 0.0f)) code_dynamic_quant(a, lda, m, k_, &quant);
  if (used) *used = quant;
  if (m <= 0 || n_ == 0) return {};

  CgIntFn fn = cg_int_generic;
  CgQuantizeFn qfn = cg_quantize_generic;
#if defined(INQ_HAVE_X86_KERNELS)
  if (isa == CodeIsa::kAvx512) {
    qfn = cg_quantize_avx512;
    if (layout_ == kCgINib || cpu().vbmi) fn = cg_int_avx512;  // the split layout permutes bytes (VBMI)
  }
#endif
  const bool split = layout_ == kCgISplit;
  const int64_t ldq = kq_ * 4;
  std::vector<uint8_t> aq;
  try {
    aq.assign(static_cast<size_t>(m * ldq), 0);  // padding depth: any value (its weights are 0)
  } catch (const std::bad_alloc&) {
    return "code GEMV: out of memory quantizing the input";
  }
  for (int64_t i = 0; i < m; ++i)
    qfn(a + i * lda, k_, quant.scale, quant.zero_point, split ? 0x80 : 0x00, aq.data() + i * ldq);

  // d = raw + corr * colsum: nibbles hold sum x_q * L, the split layout sum (x_q - 128) * L.
  const int64_t corr = split ? 128 - quant.zero_point : -quant.zero_point;
  const double sa = static_cast<double>(quant.scale) * static_cast<double>(alpha);  // exact
  const int64_t panels = panels_;
  const size_t tasks = task_count(panels);
  return run_tasks(runner, tasks, [&](size_t t) {
    const int64_t p0 = panels * static_cast<int64_t>(t) / static_cast<int64_t>(tasks);
    const int64_t p1 = panels * static_cast<int64_t>(t + 1) / static_cast<int64_t>(tasks);
    alignas(64) int32_t acc[kCgMaxRows * kCgPanel];
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t n0 = p * kCgPanel, nw = std::min<int64_t>(kCgPanel, n_ - n0);
      for (int64_t i0 = 0; i0 < m; i0 += kCgMaxRows) {
        CgIntArgs g;
        g.codes = codes_.data() + p * panel_bytes_;
        g.kq = kq_;
        g.layout = layout_;
        g.levels = levels_.data();
        g.vtab = vtab_.data();
        g.aq = aq.data() + i0 * ldq;
        g.ldq = ldq;
        g.m = static_cast<int>(std::min<int64_t>(kCgMaxRows, m - i0));
        g.acc = acc;
        fn(g);
        for (int r = 0; r < g.m; ++r) {
          float* yr = y + (i0 + r) * ldy;
          for (int64_t j = 0; j < nw; ++j) {
            const int64_t n = n0 + j;
            const int64_t d = acc[r * kCgPanel + j] + corr * colsum_[n];
            const float v = static_cast<float>(static_cast<double>(d) * (sa * unit_scale_[n]));
            yr[n] = ep.apply(v, n, (i0 + r) * ldy + n);
          }
        }
      }
    }
  });
}

}  // namespace inq
