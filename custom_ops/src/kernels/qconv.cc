// Integer convolution as an implicit GEMM over u8 activation quads (NCHW4c: 4 channels interleaved per pixel).
// The input is quantized while it is copied into zero-point-padded phase planes (one per stride phase that some
// tap reads), so that for every tap and channel quad the inputs of consecutive output columns are one
// contiguous run; the kernels read those runs in place through a per-(channel quad, tap) offset table. Output
// rows are computed "wide" (wph columns, the extra ones dropped by the epilogue).
#include "kernels/qconv.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <thread>
#include <vector>

namespace inq {

std::string QConvWeights::prepare(int64_t m, int64_t group, int64_t cg, int64_t kh, int64_t kw,
                                  const int16_t* levels, const float* unit, const QKernels* k, Path path) {
  if (m <= 0 || group <= 0 || m % group != 0 || cg <= 0 || kh <= 0 || kw <= 0)
    return "integer conv: bad weight shape";
  const int64_t mg = m / group, taps = kh * kw, cq = (cg + 3) / 4, depth = cq * taps * 4;
  k_ = k ? k : &active_qkernels();
  // Direct path when the GEMM's panels (8 rows x 4-deep quads, about 4x the multiply rate of the direct
  // path's float lanes) would be mostly padding: depthwise (8 x 4 = 32x padding), channel multipliers and
  // groups of 2-3 channels.
  const int64_t panel_rows = (mg + kQMR - 1) / kQMR * kQMR;
  direct_ = path != Path::kGemm && cg * taps <= kMaxDirectTaps &&
            (path == Path::kDirect || 4 * cg * mg < panel_rows * cq * 4);
  if (direct_) {
    taps_ = cg * taps;
    nz_start_.assign(1, 0);
    nz_tap_.clear();
    nz_level_.clear();
    for (int64_t r = 0; r < m; ++r) {
      for (int64_t t = 0; t < taps_; ++t) {
        const int16_t l = levels[r * taps_ + t];
        if (l < -128 || l > 128)
          return "integer mode: weight level " + std::to_string(l) + " (output channel " + std::to_string(r) +
                 ") is outside [-128, 128]";
        if (l == 0) continue;  // adds nothing (a float sum starting at +0 is not changed by +-0 either)
        nz_tap_.push_back(static_cast<int32_t>(t));
        nz_level_.push_back(static_cast<float>(l));
      }
      nz_start_.push_back(static_cast<int64_t>(nz_tap_.size()));
    }
    unit_.assign(unit, unit + m);
    pool_ = std::make_unique<ScratchPool>();
    return {};
  }
  // Kernel depth order: quad kq = (channel quad, tap), lane i = channel 4*quad + i.
  std::vector<int16_t> ordered(static_cast<size_t>(m * depth), 0);
  for (int64_t r = 0; r < m; ++r)
    for (int64_t c = 0; c < cg; ++c)
      for (int64_t t = 0; t < taps; ++t)
        ordered[static_cast<size_t>(r * depth + ((c / 4) * taps + t) * 4 + c % 4)] = levels[(r * cg + c) * taps + t];
  return packed_.pack(*k_, group, mg, depth, ordered.data(), unit);
}

namespace {

// Worker calls of a fused parallel section: at least the pool's thread count (the extra calls find no task).
constexpr size_t kMaxWorkers = 16;

// Two layouts of the activation planes (per channel quad, u8 quads, zero-point padded):
//  - wide: one plane per used (row phase, column phase) of the padded input, wph = ceil(wp / sw) columns; output
//    column q = oh * wph + ow, so rows are computed with wph - ow extra columns the epilogue drops.
//  - compact: one plane per used row phase and kernel column kj, ow columns, plane[i][j] = padded input
//    (i * sh + phase, j * sw + kj * dw): tap (ki, kj) reads output column q = oh * ow + ow at q + (ki*dh/sh) * ow,
//    so no column is computed in vain (kw copies of the input instead of one; used where it pays).
// In both, wph is the row width of the column space (and of the planes).
struct Layout {
  bool compact = false;
  int64_t hph = 0, wph = 0, pplane = 0, cplane = 0, cq = 0, wide = 0, wpad = 0, image = 0;  // image: bytes
  int64_t na = 0, nb = 0;
  std::vector<int> pa, pb;  // phase -> index among used phases, or -1
  std::vector<int64_t> off;  // bytes, per depth quad
};

// Compact when the columns it saves (multiply-adds of every output row) cost more than its extra copies, by
// a rough model measured on Zen 4 (the compact copy of a 1x1 conv is never larger: only the used pixels).
// Layers with very few input channels (a stem conv) keep the wide layout: their copy is large next to the
// multiply-adds per copied quad.
bool want_compact(const ConvGeometry& g, int64_t m_rows, bool tail) {
  if (const char* e = std::getenv("INQ_QCONV_LAYOUT")) {
    if (std::strcmp(e, "wide") == 0) return false;
    if (std::strcmp(e, "compact") == 0) return true;
  }
  const int64_t hp = g.h + g.pad_t + g.pad_b, wp = g.w + g.pad_l + g.pad_r;
  const int64_t hph = (hp + g.sh - 1) / g.sh, wph = (wp + g.sw - 1) / g.sw;
  // Columns computed: all with a tail tile, else whole kQCols groups.
  const int64_t rnd = tail ? 1 : kQCols;
  const int64_t wide_cols = (g.oh * wph + rnd - 1) / rnd * rnd, compact_cols = (g.oh * g.ow + rnd - 1) / rnd * rnd;
  if (compact_cols > wide_cols || g.cg() < 16) return false;
  const int64_t cq = (g.cg() + 3) / 4;
  // Cycles: one multiply-add 1/64 (vpdpbusd; x2, the measured gain also covers shorter epilogue calls), one
  // extra copied quad 1/4 (sw = 1, a memcpy) or 1 (strided gather).
  const double saved = 2.0 * static_cast<double>(m_rows) * cq * g.kh * g.kw * 4 * (wide_cols - compact_cols) / 64.0;
  const double na = static_cast<double>(std::min<int64_t>(g.sh, g.kh));
  const double extra = static_cast<double>(cq) * na * hph * (g.kw * g.ow - wph) * (g.sw == 1 ? 0.25 : 1.0);
  return saved >= extra;
}

Layout make_layout(const ConvGeometry& g, bool compact) {
  Layout l;
  const int64_t hp = g.h + g.pad_t + g.pad_b, wp = g.w + g.pad_l + g.pad_r;
  l.hph = (hp + g.sh - 1) / g.sh;
  l.wph = compact ? g.ow : (wp + g.sw - 1) / g.sw;
  l.compact = compact;
  l.pplane = l.hph * l.wph;
  // Only the stride phases some tap reads get a plane (a 1x1 stride-2 conv copies a quarter of its input).
  l.pa.assign(static_cast<size_t>(g.sh), -1);
  for (int64_t ki = 0; ki < g.kh; ++ki) l.pa[static_cast<size_t>((ki * g.dh) % g.sh)] = 0;
  for (auto& v : l.pa) if (v == 0) v = static_cast<int>(l.na++);
  if (compact) {
    l.nb = g.kw;  // one plane per kernel column, holding the input already shifted by it
  } else {
    l.pb.assign(static_cast<size_t>(g.sw), -1);
    for (int64_t kj = 0; kj < g.kw; ++kj) l.pb[static_cast<size_t>((kj * g.dw) % g.sw)] = 0;
    for (auto& v : l.pb) if (v == 0) v = static_cast<int>(l.nb++);
  }
  l.cplane = l.na * l.nb * l.pplane;
  l.cq = (g.cg() + 3) / 4;
  const int64_t taps = g.kh * g.kw;
  l.off.resize(static_cast<size_t>(l.cq * taps));
  int64_t max_off = 0;
  for (int64_t c = 0; c < l.cq; ++c)
    for (int64_t ki = 0; ki < g.kh; ++ki)
      for (int64_t kj = 0; kj < g.kw; ++kj) {
        // The plane of the tap's row phase and column (compact: kj; wide: its column phase), and where in the
        // plane's row the tap starts (compact: 0, the plane is shifted; wide: kj * dw / sw).
        const int64_t r = ki * g.dh, q = kj * g.dw;
        const int64_t column_plane = compact ? kj : l.pb[static_cast<size_t>(q % g.sw)];
        const int64_t plane = l.pa[static_cast<size_t>(r % g.sh)] * l.nb + column_plane;
        const int64_t o = 4 * (c * l.cplane + plane * l.pplane + (r / g.sh) * l.wph + (compact ? 0 : q / g.sw));
        l.off[static_cast<size_t>(c * taps + ki * g.kw + kj)] = o;
        max_off = std::max(max_off, o);
      }
  l.wide = g.oh * l.wph;
  l.wpad = (l.wide + kQCols - 1) / kQCols * kQCols;
  // Reads of dropped columns run past the planes: slack up to the last padded column of the last tap.
  l.image = (std::max(4 * l.cq * l.cplane, max_off + 4 * l.wpad) + 63) / 64 * 64;
  return l;
}

// Input row ih of the 4 channels of quad `cq` (float or u8 source, the other null); null past the channels.
void quad_rows(const ConvGeometry& g, const float* xg, const uint8_t* xg8, int64_t cq, int64_t ih,
               const float* src[4], const uint8_t* src8[4]) {
  for (int64_t c = 0; c < 4; ++c) {
    const bool in = cq * 4 + c < g.cg();
    const int64_t at = (cq * 4 + c) * g.h * g.w + ih * g.w;
    src[c] = in && xg ? xg + at : nullptr;
    src8[c] = in && xg8 ? xg8 + at : nullptr;
  }
}

// Asks for the input rows that plane rows [i0, i1) of channel quad `cq` read, all at once: a copy task is a few
// short runs per channel, too short for the hardware prefetchers, and at two threads about half of them come
// from the other core's cache (the previous layer's output), so their latency is what the copy waits for.
void prefetch_quad(const ConvGeometry& g, const float* xg, const uint8_t* xg8, int64_t cq, int64_t i0, int64_t i1) {
  const int64_t r0 = std::max<int64_t>(0, i0 * g.sh - g.pad_t), r1 = std::min(g.h, i1 * g.sh - g.pad_t);
  if (r1 <= r0) return;
  const int64_t size = xg8 ? 1 : 4;
  const char* base = xg8 ? reinterpret_cast<const char*>(xg8) : reinterpret_cast<const char*>(xg);
  for (int64_t c = cq * 4; c < std::min(g.cg(), cq * 4 + 4); ++c) {
    const char* from = base + (c * g.h * g.w + r0 * g.w) * size;
    const char* to = base + (c * g.h * g.w + r1 * g.w) * size;
    for (const char* a = from; a < to; a += 64) __builtin_prefetch(a);
  }
}

// Quantizes channel quad `cq` of one (image, group) into its zero-point-padded phase planes.
// xg8 (u8 codes, then xg is null) is copied instead.
void quantize_quad(const ConvGeometry& g, const Layout& l, const QKernels& k, const float* xg, const uint8_t* xg8,
                   int64_t cq, int64_t i0, int64_t i1, QuantParams p, uint8_t* image) {
  const uint32_t zq = static_cast<uint32_t>(p.zero_point) * 0x01010101u;
  uint32_t* planes = reinterpret_cast<uint32_t*>(image) + cq * l.cplane;
  std::vector<uint32_t> tmp;  // one quantized input row, for strided column phases
  for (int64_t a = 0; a < g.sh; ++a) {
    if (l.pa[static_cast<size_t>(a)] < 0) continue;
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t ih = i * g.sh + a - g.pad_t;
      const bool inside = ih >= 0 && ih < g.h;
      const float* src[4] = {};
      const uint8_t* src8[4] = {};
      if (inside) quad_rows(g, xg, xg8, cq, ih, src, src8);
      bool have_tmp = false;
      for (int64_t b = 0; b < g.sw; ++b) {
        if (l.pb[static_cast<size_t>(b)] < 0) continue;
        uint32_t* row = planes + (l.pa[static_cast<size_t>(a)] * l.nb + l.pb[static_cast<size_t>(b)]) * l.pplane +
                        i * l.wph;
        // Padded column j holds iw = j * sw + off, inside the image for j in [lo, hi); the zero point elsewhere
        // (each plane row written once).
        const int64_t off = b - g.pad_l;
        const int64_t lo = std::min(l.wph, off >= 0 ? 0 : (-off + g.sw - 1) / g.sw);
        const int64_t hi = std::max(lo, std::min(l.wph, g.w - off <= 0 ? 0 : (g.w - off + g.sw - 1) / g.sw));
        if (!inside || hi <= lo) {
          std::fill(row, row + l.wph, zq);
          continue;
        }
        std::fill(row, row + lo, zq);
        std::fill(row + hi, row + l.wph, zq);
        if (g.sw == 1) {
          if (xg8) {
            const uint8_t* s8[4];
            for (int c = 0; c < 4; ++c) s8[c] = src8[c] ? src8[c] + lo + off : nullptr;
            k.interleave4_u8(s8, hi - lo, p.zero_point, row + lo);
            continue;
          }
          const float* s[4];
          for (int c = 0; c < 4; ++c) s[c] = src[c] ? src[c] + lo + off : nullptr;
          k.quantize4(s, hi - lo, p.scale, p.zero_point, row + lo);
          continue;
        }
        if (!have_tmp) {
          tmp.resize(static_cast<size_t>(g.w));
          if (xg8) k.interleave4_u8(src8, g.w, p.zero_point, tmp.data());
          else k.quantize4(src, g.w, p.scale, p.zero_point, tmp.data());
          have_tmp = true;
        }
        const uint32_t* t = tmp.data();
        if (g.sw == 2) {
          for (int64_t j = lo; j < hi; ++j) row[j] = t[2 * j + off];  // a constant stride vectorizes
        } else {
          for (int64_t j = lo; j < hi; ++j) row[j] = t[j * g.sw + off];
        }
      }
    }
  }
}

// Whether the compact planes of `g` are the input plane itself shifted by whole quads (unit strides and
// dilation, output rows as wide as input rows): then each kj plane is one flat copy of the quantized input
// with its row ends set to the zero point (quantize_quad_flat) instead of a copy per row and plane.
bool flat_compact(const ConvGeometry& g, const Layout& l) {
  return l.compact && g.sh == 1 && g.sw == 1 && g.dw == 1 && l.wph == g.w;
}

// quantize_quad_compact for flat_compact layouts: rows [i0, i1) of channel quad `cq`. The input rows inside the
// image are one contiguous run per channel, quantized (or interleaved) in one call straight into the plane that
// is not shifted (kj = pad_l); plane kj is that run moved by kj - pad_l quads, after which the quads that wrapped
// around a row end are set to the zero point.
void quantize_quad_flat(const ConvGeometry& g, const Layout& l, const QKernels& k, const float* xg,
                        const uint8_t* xg8, int64_t cq, int64_t i0, int64_t i1, QuantParams p, uint8_t* image) {
  const uint32_t zq = static_cast<uint32_t>(p.zero_point) * 0x01010101u;
  uint32_t* planes = reinterpret_cast<uint32_t*>(image) + cq * l.cplane;
  const int64_t w = g.w, a = std::max(i0, g.pad_t), b = std::min(i1, g.pad_t + g.h);  // image rows [a, b)
  for (int64_t kj = 0; kj < g.kw; ++kj) {
    uint32_t* plane = planes + kj * l.pplane;
    std::fill(plane + i0 * w, plane + std::max(i0, std::min(a, i1)) * w, zq);
    std::fill(plane + std::min(i1, std::max(b, i0)) * w, plane + i1 * w, zq);
  }
  if (b <= a) return;
  const int64_t n = (b - a) * w;
  // The unshifted run: plane pad_l itself where the kernel has that column, else a scratch run.
  std::vector<uint32_t> scratch;
  uint32_t* run;
  if (g.pad_l >= 0 && g.pad_l < g.kw) {
    run = planes + g.pad_l * l.pplane + a * w;
  } else {
    scratch.resize(static_cast<size_t>(n));
    run = scratch.data();
  }
  const float* src[4];
  const uint8_t* src8[4];
  quad_rows(g, xg, xg8, cq, a - g.pad_t, src, src8);
  if (xg8) k.interleave4_u8(src8, n, p.zero_point, run);
  else k.quantize4(src, n, p.scale, p.zero_point, run);
  for (int64_t kj = 0; kj < g.kw; ++kj) {
    const int64_t shift = kj - g.pad_l;  // plane[j] = input[j + shift] within each row
    uint32_t* plane = planes + kj * l.pplane + a * w;
    if (plane == run) continue;  // unshifted, and a row never wraps
    // Quads moved in from outside the run are row-end ones, set below.
    const int64_t lo = std::max<int64_t>(0, -shift), hi = std::min(n, n - shift);
    if (hi > lo) std::memcpy(plane + lo, run + lo + shift, static_cast<size_t>(hi - lo) * 4);
    for (int64_t r = 0; r < b - a; ++r) {
      uint32_t* row = plane + r * w;
      for (int64_t j = 0; j < std::min(w, -shift); ++j) row[j] = zq;
      for (int64_t j = std::max<int64_t>(0, w - shift); j < w; ++j) row[j] = zq;
    }
  }
}

// quantize_quad for the compact layout: each input row quantized once into a zero-point padded row, then
// copied (column stride sw, shift kj * dw) into the row of each kj plane.
void quantize_quad_compact(const ConvGeometry& g, const Layout& l, const QKernels& k, const float* xg,
                           const uint8_t* xg8, int64_t cq, int64_t i0, int64_t i1, QuantParams p, uint8_t* image) {
  const uint32_t zq = static_cast<uint32_t>(p.zero_point) * 0x01010101u;
  uint32_t* planes = reinterpret_cast<uint32_t*>(image) + cq * l.cplane;
  const int64_t wp = g.w + g.pad_l + g.pad_r;
  std::vector<uint32_t> tmp(static_cast<size_t>(wp + 16), zq);  // padded row (+ slack, never read)
  uint32_t* t = tmp.data();
  for (int64_t a = 0; a < g.sh; ++a) {
    if (l.pa[static_cast<size_t>(a)] < 0) continue;
    uint32_t* pbase = planes + l.pa[static_cast<size_t>(a)] * l.nb * l.pplane;
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t ih = i * g.sh + a - g.pad_t;
      if (ih < 0 || ih >= g.h) {
        for (int64_t kj = 0; kj < g.kw; ++kj) {
          uint32_t* row = pbase + kj * l.pplane + i * l.wph;
          std::fill(row, row + l.wph, zq);
        }
        continue;
      }
      const float* src[4];
      const uint8_t* src8[4];
      quad_rows(g, xg, xg8, cq, ih, src, src8);
      if (xg8) k.interleave4_u8(src8, g.w, p.zero_point, t + g.pad_l);
      else k.quantize4(src, g.w, p.scale, p.zero_point, t + g.pad_l);
      for (int64_t kj = 0; kj < g.kw; ++kj) {
        uint32_t* row = pbase + kj * l.pplane + i * l.wph;
        const uint32_t* s = t + kj * g.dw;
        if (g.sw == 1) {
          std::memcpy(row, s, static_cast<size_t>(l.wph) * 4);
        } else if (g.sw == 2) {
          for (int64_t j = 0; j < l.wph; ++j) row[j] = s[2 * j];  // a constant stride vectorizes
        } else {
          for (int64_t j = 0; j < l.wph; ++j) row[j] = s[j * g.sw];
        }
      }
    }
  }
}

// Items [0, n) claimed in runs from both ends: the thread that called the op takes them from the front, the
// pool's other threads from the back. Both phases order their items by position in the image (copied rows,
// output columns), so the calling thread keeps to the top of every image and the others to the bottom, layer
// after layer, and each thread mostly reads what it wrote itself in the layer before, from its own core's
// caches. (Claimed from one end, half of every input sat in the other core's cache: at two threads the copy
// took 3.7x its serial time and the GEMM 9% more.)
class TwoEndedClaims {
 public:
  explicit TwoEndedClaims(int64_t n) : state_(pack(0, n)) {
    if (n >= (int64_t{1} << 31)) throw std::runtime_error("integer conv: too many work items");  // 32-bit ends
  }
  // Claims [*begin, *end), run(at, left) items long (clamped to [1, left]), where `at` is the front (front) or
  // the back (exclusive) of what is left and `left` its size; false when everything is claimed.
  template <class Run>
  bool claim(bool front, const Run& run, int64_t* begin, int64_t* end) {
    uint64_t s = state_.load(std::memory_order_relaxed);
    for (;;) {
      const int64_t f = static_cast<int64_t>(s & 0xffffffffu), b = static_cast<int64_t>(s >> 32);
      if (f >= b) return false;
      const int64_t n = std::clamp<int64_t>(run(front ? f : b, b - f), 1, b - f);
      if (state_.compare_exchange_weak(s, front ? pack(f + n, b) : pack(f, b - n), std::memory_order_relaxed)) {
        *begin = front ? f : b - n, *end = front ? f + n : b;
        return true;
      }
    }
  }

 private:
  static uint64_t pack(int64_t f, int64_t b) { return static_cast<uint64_t>(f) | static_cast<uint64_t>(b) << 32; }
  std::atomic<uint64_t> state_;
};

// Runs first(i) for i < n1, then second(front) once per worker call, in one parallel section (one wake-up of the
// pool instead of two): worker calls claim first-phase items one by one (TwoEndedClaims); a worker that runs
// out of them waits for the ones others have claimed (always running, so it never waits on an item nobody
// took), then calls second(front), which claims its own work from its end. Works on any pool, serial included
// (the first call does everything). `calls`: worker calls wanted (at most kMaxWorkers).
template <class F1, class F2>
void run_two_phases(const TaskRunner& runner, size_t calls, int64_t n1, const F1& first, const F2& second) {
  TwoEndedClaims items(n1);
  std::atomic<int64_t> done1{0};
  std::atomic<bool> failed{false};
  const std::thread::id caller = std::this_thread::get_id();
  runner.run(std::max<size_t>(1, std::min(kMaxWorkers, calls)), [&](size_t) {
    const bool front = std::this_thread::get_id() == caller;
    for (int64_t t, end; items.claim(front, [](int64_t, int64_t) { return 1; }, &t, &end);) {
      try {
        first(t);
      } catch (...) {
        failed.store(true);
      }
      done1.fetch_add(1, std::memory_order_release);
    }
    for (int spins = 0; done1.load(std::memory_order_acquire) < n1; ++spins) {
      if (spins < 64) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
      } else {
        std::this_thread::yield();
      }
    }
    if (failed.load()) throw std::runtime_error("integer conv: a parallel task failed");
    second(front);
  });
}

}  // namespace

void qconv_forward(const ConvGeometry& g, const QConvWeights& w, const float* x, QuantParams xq, const Epilogue& ep,
                   float* y, const TaskRunner& runner) {
  QConvOperands io;
  io.x = x, io.xq = xq, io.y = y;
  qconv_run(g, w, io, ep, runner);
}

void qconv_run(const ConvGeometry& g, const QConvWeights& w, const QConvOperands& operands, const Epilogue& ep,
               const TaskRunner& runner) {
  const QKernels& k = w.kernels();
  QConvOperands io = operands;
  if (!io.x_u8 && io.xq.dynamic()) io.xq = dynamic_params(k, io.x, g.n * g.c * g.h * g.w, runner);
  if (w.direct()) return qconv_direct(g, w, io, ep, runner);
  const QuantParams p = io.xq;
  const float* x = io.x;
  float* y = io.y;
  const QPackedWeights& pw = w.packed();
  const int64_t m_rows = g.mg() + pw.dense_correction_rows() / std::max<int64_t>(1, g.group);
  const Layout l = make_layout(g, want_compact(g, m_rows, k.tile_tail != nullptr));
  const int64_t images = g.n * g.group, cg = g.cg(), mg = g.mg(), out_plane = g.out_plane();
  ScratchPool::Lease buf = pw.pool().acquire(static_cast<size_t>(images * l.image));
  uint8_t* act = buf.as<uint8_t>();

  // GEMM work: column units of whole kQChunk chunks (the kernels' widest tile, so that the narrower tiles run
  // once per row block rather than once per run), the last unit taking the remainder; kQCols groups where whole
  // chunks give too few units to share. Items in the order (image and group, span of up to ~256 columns, 64-row
  // block, unit), so that the two ends of TwoEndedClaims are the two ends of the image for every row block. A
  // run stays within one span of one block: up to ~256 columns while there is plenty of work (fewer per-run
  // setups; measured faster on two threads than ~128 each), about a (2P)-th of what is left near the end (P:
  // the workers seen so far), so that the threads end together even when one of them joined late.
  const int64_t bpg = pw.blocks_per_group();
  const int64_t chunks = l.wide / kQChunk;
  const int64_t unit = images * bpg * chunks >= 8 ? kQChunk : kQCols;
  const int64_t units = std::max<int64_t>(1, unit == kQChunk ? chunks : l.wpad / kQCols);
  const int64_t span = std::min(units, std::max<int64_t>(1, 256 / unit)), spans = (units + span - 1) / span;
  const int64_t items = images * spans * bpg * span;  // the last span's units past `units` are empty
  const int64_t max_cols = span * unit + (l.wpad - units * unit);  // a run ending with the last unit
  // Copy tasks over (image, group, run of plane rows, channel quad): about 128 of them, at least two row runs.
  // Ordered as the GEMM splits its work between the two ends, rows before quads when it splits columns (one
  // end copies the top of the image), quads before rows when it splits channels (at 14x14 and 7x7: one end
  // copies the channels that the same end wrote in a previous layer of the same shape).
  const int64_t qunits = images * l.cq;
  const int64_t rchunks = std::min(l.hph, std::max<int64_t>(2, 128 / qunits));
  const int64_t rper = (l.hph + rchunks - 1) / rchunks;
  const bool rows_first = spans > 1 || bpg == 1;
  auto quantize_task = [&](int64_t t) {
    const int64_t img = t / (l.cq * rchunks), within = t % (l.cq * rchunks);
    const int64_t cq = rows_first ? within % l.cq : within / rchunks;
    const int64_t rc = rows_first ? within / l.cq : within % rchunks;
    const int64_t i0 = std::min(l.hph, rc * rper), i1 = std::min(l.hph, i0 + rper);
    uint8_t* image = act + img * l.image;
    const int64_t at = ((img / g.group) * g.c + (img % g.group) * cg) * g.h * g.w;
    prefetch_quad(g, x ? x + at : nullptr, io.x_u8 ? io.x_u8 + at : nullptr, cq, i0, i1);
    if (flat_compact(g, l))
      quantize_quad_flat(g, l, k, x ? x + at : nullptr, io.x_u8 ? io.x_u8 + at : nullptr, cq, i0, i1, p, image);
    else if (l.compact)
      quantize_quad_compact(g, l, k, x ? x + at : nullptr, io.x_u8 ? io.x_u8 + at : nullptr, cq, i0, i1, p, image);
    else
      quantize_quad(g, l, k, x ? x + at : nullptr, io.x_u8 ? io.x_u8 + at : nullptr, cq, i0, i1, p, image);
    if (cq == l.cq - 1 && rc == rchunks - 1)
      std::fill(image + 4 * l.cq * l.cplane, image + l.image, static_cast<uint8_t>(p.zero_point));
  };

  int64_t max_panels = 0;
  for (int64_t grp = 0; grp < g.group; ++grp)
    for (int64_t bi = 0; bi < bpg; ++bi) max_panels = std::max(max_panels, pw.block(grp, bi).panels);
  // With a u8 summand, max_cols more floats after the accumulators: the dequantized summand of one row segment.
  const size_t acc_count = static_cast<size_t>(max_panels * kQMR * max_cols);
  const size_t acc_bytes = (acc_count + (io.z_u8 ? static_cast<size_t>(max_cols) : 0)) * sizeof(int32_t);
  TwoEndedClaims claims(items);
  std::atomic<int64_t> workers{0};
  const float lo = ep.lower(), hi = ep.upper();
  const bool fusable = (l.compact || l.wph == g.ow) && k.tile_epilogue;

  auto gemm_worker = [&](bool front) {
    workers.fetch_add(1, std::memory_order_relaxed);
    std::optional<ScratchPool::Lease> accl;
    int32_t* acc = nullptr;
    // The current row block's rescale per output row (a block has at most kBlockRows rows) and output pointers.
    // Where column q is output offset q of each channel plane (compact, or wide rows without dropped columns),
    // the kernels may apply it in registers and store the outputs themselves; the columns they leave take the
    // acc way below.
    QRowEpilogue rows[QPackedWeights::kBlockRows];
    float* yrow[QPackedWeights::kBlockRows];
    uint8_t* y8row[QPackedWeights::kBlockRows];
    const uint8_t* z8row[QPackedWeights::kBlockRows];
    int64_t current = -1, begin, end;
    auto run = [&](int64_t at, int64_t left) {
      const int64_t p = workers.load(std::memory_order_relaxed);  // at least this worker
      const int64_t in_span = front ? span - at % span : (at - 1) % span + 1;
      return std::min(in_span, std::max<int64_t>(1, left / (2 * p)));
    };
    while (claims.claim(front, run, &begin, &end)) {
      const int64_t seg = begin / span, s_index = seg / bpg % spans;  // seg: (image and group, span, block)
      const int64_t u0 = s_index * span + begin % span, u1 = std::min(units, s_index * span + (end - 1) % span + 1);
      if (u0 >= units) continue;  // past the last unit
      if (!accl) {
        accl.emplace(pw.pool().acquire(acc_bytes));
        acc = accl->as<int32_t>();
      }
      const int64_t bi = seg % bpg, img = seg / bpg / spans, n = img / g.group, grp = img % g.group;
      const QBlock& b = pw.block(grp, bi);
      if (img * bpg + bi != current) {
        current = img * bpg + bi;
        for (int64_t r = 0; r < b.rows; ++r) {
          const int64_t ch = grp * mg + b.row0 + r;  // output channel, also the packed row index
          const int64_t plane = (n * g.m + ch) * out_plane;
          rows[r] = QRowEpilogue{p.zero_point * pw.rowsum(ch), pw.negated(ch), pw.unit(ch) * p.scale,
                                 ep.bias ? ep.bias[ch] : 0.0f, ep.bias != nullptr,
                                 ep.summand ? ep.summand + plane : nullptr, lo, hi};
          yrow[r] = y ? y + plane : nullptr;
          y8row[r] = io.y_u8 ? io.y_u8 + plane : nullptr;
          z8row[r] = io.z_u8 ? io.z_u8 + plane : nullptr;
        }
      }
      const int64_t q0 = u0 * unit, qn = (u1 == units ? l.wpad : u1 * unit) - q0, qend = std::min(q0 + qn, l.wide);
      float* zbuf = reinterpret_cast<float*>(acc + b.panels * kQMR * qn);
      QTileOutput out{static_cast<int>(b.rows), rows, io.y ? yrow : nullptr, io.y_u8 ? y8row : nullptr,
                      io.z_u8 ? z8row : nullptr, io.zq.scale, io.yq.scale, io.zq.zero_point, io.yq.zero_point};
      const int64_t done = pw.run_block(b, act + img * l.image + 4 * q0, l.off.data(), qn, acc, qend - q0,
                                        fusable ? &out : nullptr, q0);
      if (q0 + done >= qend) continue;
      for (int64_t r = 0; r < b.rows; ++r) {
        QRowEpilogue e = rows[r];
        const int64_t plane = (n * g.m + grp * mg + b.row0 + r) * out_plane;
        for (int64_t q = q0 + done; q < qend;) {
          const int64_t oh = q / l.wph, ow = q % l.wph;
          // Compact: output rows are consecutive columns, one call for the whole segment.
          const int64_t len = l.compact ? qend - q : std::min(qend - q, l.wph - ow);
          const int64_t keep = l.compact ? len : std::min(len, std::max<int64_t>(0, g.ow - ow));
          if (keep > 0) {
            const int64_t at = plane + oh * g.ow + ow;
            e.summand = ep.summand ? ep.summand + at : nullptr;
            if (io.z_u8) {
              k.dequantize_u8(io.z_u8 + at, keep, io.zq.scale, io.zq.zero_point, zbuf);
              e.summand = zbuf;
            }
            if (io.y_u8) k.epilogue_u8(e, acc + r * qn + (q - q0), keep, io.yq.scale, io.yq.zero_point, io.y_u8 + at);
            else k.epilogue(e, acc + r * qn + (q - q0), keep, y + at);
          }
          q += len;
        }
      }
    }
  };
  const int64_t copy_tasks = qunits * rchunks;
  run_two_phases(runner, static_cast<size_t>(std::max(copy_tasks, items)), copy_tasks, quantize_task, gemm_worker);
}

}  // namespace inq
