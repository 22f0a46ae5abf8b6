// Direct integer convolution for depthwise and other few-channels-per-group convolutions (QConvWeights::direct).
// One task per run of (image, group)s: the group's cg input channels are quantized into zero-padded float
// planes of v = q - zp (0 in the padding), split into the stride phases some tap reads (as the GEMM path's
// phase planes: phase (a, b) holds padded rows a, a + sh, ... and columns b, b + sw, ...), so that for every
// tap the inputs of consecutive output columns are one contiguous run; then every output channel of the group
// sums its nonzero taps over whole output rows (QKernels::dw_conv) and rescales in place.
#include <algorithm>
#include <vector>

#include "kernels/clones.h"
#include "kernels/qconv.h"

namespace inq {

namespace {

struct DirectLayout {
  int64_t hph = 0, wph = 0, pplane = 0, nb = 0, cplane = 0;  // cplane: floats per input channel
  std::vector<int> pa, pb;   // phase -> index among used phases, or -1
  std::vector<int64_t> off;  // per tap (c, ki, kj): float offset of output (0, 0)'s input
  // Per used row phase: the rows [i0, i1) inside the image (input row i0 * sh + a - pad_t onwards, sh apart),
  // and per input column residue i < min(sw, w): where input column i of row i0 goes (offset in the channel's
  // planes), or -1 when no tap reads its column phase.
  struct RowPhase {
    int64_t i0, i1, ih0;
    std::vector<int64_t> dst;
  };
  std::vector<RowPhase> rows;
};

DirectLayout make_direct_layout(const ConvGeometry& g) {
  DirectLayout l;
  const int64_t hp = g.h + g.pad_t + g.pad_b, wp = g.w + g.pad_l + g.pad_r;
  l.hph = (hp + g.sh - 1) / g.sh;
  l.wph = (wp + g.sw - 1) / g.sw;
  l.pplane = l.hph * l.wph;
  l.pa.assign(static_cast<size_t>(g.sh), -1);
  l.pb.assign(static_cast<size_t>(g.sw), -1);
  for (int64_t ki = 0; ki < g.kh; ++ki) l.pa[static_cast<size_t>((ki * g.dh) % g.sh)] = 0;
  for (int64_t kj = 0; kj < g.kw; ++kj) l.pb[static_cast<size_t>((kj * g.dw) % g.sw)] = 0;
  int64_t na = 0;
  for (auto& v : l.pa) if (v == 0) v = static_cast<int>(na++);
  for (auto& v : l.pb) if (v == 0) v = static_cast<int>(l.nb++);
  l.cplane = na * l.nb * l.pplane;
  const int64_t cg = g.cg();
  l.off.resize(static_cast<size_t>(cg * g.kh * g.kw));
  for (int64_t c = 0; c < cg; ++c)
    for (int64_t ki = 0; ki < g.kh; ++ki)
      for (int64_t kj = 0; kj < g.kw; ++kj) {
        const int64_t r = ki * g.dh, q = kj * g.dw;
        const int64_t phase = l.pa[static_cast<size_t>(r % g.sh)] * l.nb + l.pb[static_cast<size_t>(q % g.sw)];
        l.off[static_cast<size_t>((c * g.kh + ki) * g.kw + kj)] =
            c * l.cplane + phase * l.pplane + (r / g.sh) * l.wph + q / g.sw;
      }
  for (int64_t a = 0; a < g.sh; ++a) {
    if (l.pa[static_cast<size_t>(a)] < 0) continue;
    DirectLayout::RowPhase rp;
    // Row i of phase a holds input row i * sh + a - pad_t.
    rp.i0 = std::min(l.hph, g.pad_t - a <= 0 ? 0 : (g.pad_t - a + g.sh - 1) / g.sh);
    rp.i1 = std::max(rp.i0, std::min(l.hph, (g.h + g.pad_t - a + g.sh - 1) / g.sh));
    rp.ih0 = rp.i0 * g.sh + a - g.pad_t;
    if (rp.i1 <= rp.i0) continue;
    for (int64_t i = 0; i < g.sw && i < g.w; ++i) {
      const int64_t col = g.pad_l + i, pb = l.pb[static_cast<size_t>(col % g.sw)];
      rp.dst.push_back(pb < 0 ? -1
                              : (l.pa[static_cast<size_t>(a)] * l.nb + pb) * l.pplane + rp.i0 * l.wph + col / g.sw);
    }
    l.rows.push_back(std::move(rp));
  }
  return l;
}

}  // namespace

// Direct-path input copy of u8 codes: as dw_quantize, with float(x) - zp for an already quantized x. Strides 1
// and 2 (every depthwise layer of the usual nets) have loops of their own, which vectorize: with a run-time
// stride the loop stayed scalar and took 4x the convolution's own time on a stride-2 layer.
INQ_CLONES
static void dw_widen_u8(const uint8_t* __restrict x, int64_t rows, int64_t n, int64_t ldx, int64_t sw, int32_t zp,
                        float* const* dst, int64_t ldd) {
  const float zpf = static_cast<float>(zp);
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* __restrict s = x + r * ldx;
    if (sw == 1) {
      if (!dst[0]) continue;
      float* __restrict d = dst[0] + r * ldd;
      for (int64_t k = 0; k < n; ++k) d[k] = static_cast<float>(s[k]) - zpf;
      continue;
    }
    if (sw == 2) {
      float* __restrict d0 = dst[0] ? dst[0] + r * ldd : nullptr;
      float* __restrict d1 = n > 1 && dst[1] ? dst[1] + r * ldd : nullptr;
      if (d0)
        for (int64_t k = 0; k < (n + 1) / 2; ++k) d0[k] = static_cast<float>(s[2 * k]) - zpf;
      if (d1)
        for (int64_t k = 0; k < n / 2; ++k) d1[k] = static_cast<float>(s[2 * k + 1]) - zpf;
      continue;
    }
    for (int64_t i = 0; i < sw && i < n; ++i) {
      if (!dst[i]) continue;
      float* d = dst[i] + r * ldd;
      for (int64_t j = i, k = 0; j < n; j += sw, ++k) d[k] = static_cast<float>(s[j]) - zpf;
    }
  }
}

void qconv_direct(const ConvGeometry& g, const QConvWeights& w, const QConvOperands& io, const Epilogue& ep,
                  const TaskRunner& runner) {
  const QKernels& k = w.kernels();
  const QuantParams p = io.xq;
  const float* x = io.x;
  float* y = io.y;
  const DirectLayout l = make_direct_layout(g);
  const int64_t cg = g.cg(), mg = g.mg(), units = g.n * g.group, in_plane = g.in_plane(), out_plane = g.out_plane();
  // Tasks of whole (image, group)s: enough of them to balance the pool, few enough to keep per-task setup small.
  const int64_t per_task = std::max<int64_t>(1, units / 64), tasks = (units + per_task - 1) / per_task;
  const size_t plane_floats = static_cast<size_t>((cg * l.cplane + 31) / 16 * 16);
  const float lo = ep.lower(), hi = ep.upper();
  const bool dense3 = cg == 1 && g.kh == 3 && g.kw == 3 && g.sh == 1 && g.sw == 1 && g.dh == 1 && g.dw == 1;
  runner.run(static_cast<size_t>(tasks), [&](size_t t) {
    const int64_t u0 = static_cast<int64_t>(t) * per_task, u1 = std::min(units, u0 + per_task);
    // u8 summand / output: one output plane of floats each (the dequantized summand, the float result).
    const size_t out_floats = static_cast<size_t>((out_plane + 15) / 16 * 16);
    const size_t extra = (io.z_u8 ? out_floats : 0) + (io.y_u8 ? out_floats : 0);
    ScratchPool::Lease lease = w.pool().acquire((plane_floats + extra) * sizeof(float) +
                                                static_cast<size_t>(w.taps()) * sizeof(int64_t));
    float* planes = lease.as<float>();
    float* zbuf = planes + plane_floats;
    float* ybuf = zbuf + (io.z_u8 ? out_floats : 0);
    int64_t* offs = reinterpret_cast<int64_t*>(planes + plane_floats + extra);
    float dense[9];
    // The padding is never written below: zeroed once, it stays zero for every channel of the task.
    std::fill(planes, planes + cg * l.cplane, 0.0f);
    std::vector<float*> dst(static_cast<size_t>(g.sw));
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t n = u / g.group, grp = u % g.group;
      const int64_t xat = (n * g.c + grp * cg) * in_plane;
      for (int64_t c = 0; c < cg; ++c)
        for (const auto& rp : l.rows) {
          float* base = planes + c * l.cplane;
          for (size_t i = 0; i < rp.dst.size(); ++i) dst[i] = rp.dst[i] < 0 ? nullptr : base + rp.dst[i];
          const int64_t at = xat + c * in_plane + rp.ih0 * g.w;
          if (io.x_u8)
            dw_widen_u8(io.x_u8 + at, rp.i1 - rp.i0, g.w, g.sh * g.w, g.sw, p.zero_point, dst.data(), l.wph);
          else
            k.dw_quantize(x + at, rp.i1 - rp.i0, g.w, g.sh * g.w, g.sw, p.scale, p.zero_point, dst.data(), l.wph);
        }
      for (int64_t r = 0; r < mg; ++r) {
        const int64_t ch = grp * mg + r, at = (n * g.m + ch) * out_plane;
        const int64_t b = w.nonzero_begin(ch), e = w.nonzero_end(ch);
        for (int64_t i = b; i < e; ++i) offs[i - b] = l.off[static_cast<size_t>(w.nonzero_tap()[i])];
        const float* levels = w.nonzero_level() + b;
        int64_t taps = e - b;
        int shape = 0;
        if (dense3) {  // all nine taps, zeros included, for the row-reusing kernels
          for (int64_t i = 0; i < 9; ++i) offs[i] = l.off[static_cast<size_t>(i)], dense[i] = 0.0f;
          for (int64_t i = b; i < e; ++i) dense[w.nonzero_tap()[i]] = w.nonzero_level()[i];
          levels = dense, taps = 9, shape = 3;
        }
        const float* summand = ep.summand ? ep.summand + at : nullptr;
        if (io.z_u8) {
          k.dequantize_u8(io.z_u8 + at, out_plane, io.zq.scale, io.zq.zero_point, zbuf);
          summand = zbuf;
        }
        QDwArgs a{planes, offs, levels, taps, shape, g.oh, g.ow, l.wph, w.unit(ch) * p.scale,
                  ep.bias ? ep.bias[ch] : 0.0f, ep.bias != nullptr, summand, lo, hi, io.y_u8 ? ybuf : y + at};
        k.dw_conv(a);
        if (io.y_u8) k.quantize_u8(ybuf, out_plane, io.yq.scale, io.yq.zero_point, io.y_u8 + at);
      }
    }
  });
}

}  // namespace inq
