// Convolution forward pass: tasks over (image, group, output-column block) on the GEMM path and over
// (image, channel) on the depthwise path.
#include "kernels/conv.h"

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "kernels/clones.h"

namespace inq {

bool parse_auto_pad(const std::string& s, AutoPad* out) {
  if (s.empty() || s == "NOTSET") *out = AutoPad::kNotSet;
  else if (s == "SAME_UPPER") *out = AutoPad::kSameUpper;
  else if (s == "SAME_LOWER") *out = AutoPad::kSameLower;
  else if (s == "VALID") *out = AutoPad::kValid;
  else return false;
  return true;
}

namespace {
// `count` floats of scratch from the weights' pool, held until the lease goes out of scope.
ScratchPool::Lease scratch_floats(const ConvWeights& w, int64_t count) {
  return w.pool().acquire(static_cast<size_t>(std::max<int64_t>(count, 1)) * sizeof(float));
}

// C (m x n, row stride ldc) = A * B + row_bias, with the weights' scratch pool.
GemmArgs conv_gemm(const ConvWeights& w, int64_t m, int64_t n, int64_t k, const PanelSource& a,
                   const PanelSource& b, float* c, int64_t ldc, const float* row_bias) {
  GemmArgs args;
  args.scratch = &w.pool();
  args.m = m, args.n = n, args.k = k;
  args.a = &a, args.b = &b;
  args.c = c, args.ldc = ldc;
  args.row_bias = row_bias;
  return args;
}

bool add_ok(int64_t a, int64_t b, int64_t* r) { return !__builtin_add_overflow(a, b, r); }
bool mul_ok(int64_t a, int64_t b, int64_t* r) { return !__builtin_mul_overflow(a, b, r); }
}  // namespace

std::string conv_output_shape(const std::vector<int64_t>& in, const std::vector<int64_t>& kernel,
                              const std::vector<int64_t>& strides, const std::vector<int64_t>& dilations,
                              const std::vector<int64_t>& pads, AutoPad auto_pad, std::vector<int64_t>* out,
                              std::vector<int64_t>* pads_used) {
  const size_t nd = in.size();
  out->assign(nd, 0);
  pads_used->assign(2 * nd, 0);
  for (size_t i = 0; i < nd; ++i) {
    const int64_t s = strides[i];
    const std::string axis = "axis " + std::to_string(i + 2) + ": input " + std::to_string(in[i]) + ", kernel " +
                             std::to_string(kernel[i]) + ", stride " + std::to_string(s) + ", dilation " +
                             std::to_string(dilations[i]);
    if (s < 1 || dilations[i] < 1 || in[i] < 0) return axis + ": stride, dilation or input size out of range";
    int64_t dk = 0;
    if (!mul_ok(kernel[i] - 1, dilations[i], &dk) || !add_ok(dk, 1, &dk))
      return axis + ": the dilated kernel size overflows int64";
    int64_t begin = 0, end = 0;
    switch (auto_pad) {
      case AutoPad::kNotSet:
        begin = pads[i];
        end = pads[i + nd];
        break;
      case AutoPad::kValid:
        break;
      case AutoPad::kSameUpper:
      case AutoPad::kSameLower: {
        const int64_t target = in[i] / s + (in[i] % s != 0);  // ceil(in / s)
        int64_t total = 0;
        if (!mul_ok(target - 1, s, &total) || !add_ok(total, dk, &total) || !add_ok(total, -in[i], &total))
          return axis + ": the SAME padding overflows int64";
        const bool upper = auto_pad == AutoPad::kSameUpper;
        if (total >= 0) begin = upper ? total / 2 : (total + 1) / 2;
        else begin = upper ? (total + 1) / 2 : (total + 2) / 2;  // crops the input, as onnxruntime 1.32
        end = total - begin;
        break;
      }
    }
    int64_t span = 0;
    if (!add_ok(in[i], begin, &span) || !add_ok(span, end, &span) || !add_ok(span, -dk, &span))
      return axis + ": the padded input size overflows int64";
    const int64_t o = span < 0 ? 0 : span / s + 1;
    (*out)[i] = o;
    (*pads_used)[i] = begin;
    (*pads_used)[i + nd] = end;
    if (o <= 0) {
      return "output spatial size along axis " + std::to_string(i + 2) + " is not positive: input " +
             std::to_string(in[i]) + ", pads " + std::to_string(begin) + "+" + std::to_string(end) +
             ", dilated kernel " + std::to_string(dk) + ", stride " + std::to_string(s);
    }
  }
  return {};
}

void ConvWeights::prepare(const MicroKernel& uk, int64_t m, int64_t group, int64_t cg, int64_t kh, int64_t kw,
                          std::vector<float> dense) {
  uk_ = &uk;
  dense_ = std::move(dense);
  depthwise_ = (cg == 1 && m == group);
  m_ = m, group_ = group, kg_ = cg * kh * kw;
}

const PrepackedPanels& ConvWeights::row_panels(int64_t g) const {
  std::call_once(rows_once_, [this] {
    const int64_t mg = m_ / group_;
    rows_.resize(static_cast<size_t>(group_));
    for (int64_t i = 0; i < group_; ++i) rows_[i].pack(dense_.data() + i * mg * kg_, kg_, 1, mg, kg_, uk_->mr);
  });
  return rows_[g];
}

const PrepackedPanels& ConvWeights::column_panels(int64_t g) const {
  std::call_once(columns_once_, [this] {
    const int64_t mg = m_ / group_;
    columns_.resize(static_cast<size_t>(group_));
    for (int64_t i = 0; i < group_; ++i) columns_[i].pack(dense_.data() + i * mg * kg_, kg_, 1, mg, kg_, uk_->nr);
  });
  return columns_[g];
}

const WinogradWeights& ConvWeights::winograd() const {
  std::call_once(winograd_once_, [this] { winograd_prepare(*uk_, m_, kg_ / 9, dense_.data(), &winograd_); });
  return winograd_;
}

namespace {

// INQ_ONNX_CONV=im2col selects the im2col path (kept for testing and comparison).
bool force_im2col() {
  static const bool v = [] {
    const char* e = std::getenv("INQ_ONNX_CONV");
    return e && std::string(e) == "im2col";
  }();
  return v;
}

// B operand read in place through per-depth offsets: element(q, d) = base[offsets[d] + q]. On the implicit-GEMM
// path base is a zero-padded image (cg planes of hp x wp, plus slack), q a wide output position oh * wp + ow
// (columns ow >= OW are computed and dropped) and d = (c, ki, kj); on the pointwise path base is the input
// itself and d a channel.
class InPlaceRows final : public PanelSource {
 public:
  InPlaceRows(const float* base, const int64_t* offsets) : base_(base), offsets_(offsets) {}
  const float* in_place(int64_t r0, int64_t d0, const int64_t** offsets) const override {
    *offsets = offsets_ + d0;
    return base_ + r0;
  }
  const float* panels(int64_t r0, int64_t rn, int64_t d0, int64_t dn, int width, float* scratch,
                      int64_t* panel_stride) const override {
    for (int64_t p = 0; p < rn; p += width)
      for (int64_t d = 0; d < dn; ++d) {
        const float* src = base_ + offsets_[d0 + d] + r0 + p;
        float* dst = scratch + (p / width) * dn * width + d * width;
        for (int64_t j = 0; j < width; ++j) dst[j] = p + j < rn ? src[j] : 0.0f;
      }
    *panel_stride = dn * width;
    return scratch;
  }

 private:
  const float* base_;
  const int64_t* offsets_;
};

// Portable GatherPanelFn.
void gather_panel_portable(const float* base, const int64_t* offsets, int64_t dn, const GatherPiece* pieces,
                           int npieces, int width, float* dst) {
  for (int64_t d = 0; d < dn; ++d) {
    const float* src = base + offsets[d];
    float* row = dst + d * width;
    for (int j = 0; j < width; ++j) row[j] = 0.0f;
    for (int p = 0; p < npieces; ++p) {
      if (!pieces[p].mask) continue;
      const int j0 = 16 * pieces[p].vec + __builtin_ctz(pieces[p].mask), len = __builtin_popcount(pieces[p].mask);
      const float* s = src + pieces[p].delta;
      for (int j = j0; j < j0 + len; ++j) row[j] = s[j];
    }
  }
}

// B operand of the exact implicit-GEMM path: output positions p = oh * OW + ow (no dropped columns), packed
// from the padded phase planes, where position p of tap d is base[offsets[d] + oh * wph + ow].
class ExactPlanePanels final : public PanelSource {
 public:
  ExactPlanePanels(const MicroKernel& uk, const float* base, const int64_t* offsets, int64_t p0, int64_t ow,
                   int64_t wph)
      : uk_(uk), base_(base), offsets_(offsets), p0_(p0), ow_(ow), wph_(wph) {}
  const float* panels(int64_t r0, int64_t rn, int64_t d0, int64_t dn, int width, float* scratch,
                      int64_t* panel_stride) const override {
    const GatherPanelFn gather = uk_.gather ? uk_.gather : gather_panel_portable;
    std::vector<GatherPiece>& pieces = pieces_;
    const int vectors = (width + 15) / 16;
    for (int64_t p = 0; p < rn; p += width) {
      // Runs of one output row within one vector, then every vector padded to the same count.
      pieces.clear();
      const int64_t first = p0_ + r0 + p, cols = std::min<int64_t>(width, rn - p);
      std::vector<int>& count = count_;
      count.assign(static_cast<size_t>(vectors), 0);
      for (int64_t j = 0; j < cols;) {
        const int64_t pos = first + j, oh = pos / ow_;
        const int64_t end = std::min({cols, j + (ow_ - pos % ow_), (j / 16 + 1) * 16});
        const uint32_t lanes = static_cast<uint32_t>(end - j), lo = static_cast<uint32_t>(j % 16);
        pieces.push_back({static_cast<int32_t>(j / 16), ((1u << lanes) - 1u) << lo, first + oh * (wph_ - ow_)});
        ++count[static_cast<size_t>(j / 16)];
        j = end;
      }
      const int per = std::max(1, *std::max_element(count.begin(), count.end()));
      padded_.assign(static_cast<size_t>(vectors * per), GatherPiece{0, 0u, 0});
      for (int v = 0, at = 0; v < vectors; ++v)
        for (int i = 0; i < per; ++i) {
          GatherPiece& q = padded_[static_cast<size_t>(v * per + i)];
          q.vec = v;
          if (i < count[static_cast<size_t>(v)]) q = pieces[static_cast<size_t>(at++)];
        }
      gather(base_, offsets_ + d0, dn, padded_.data(), static_cast<int>(padded_.size()), width,
             scratch + (p / width) * dn * width);
    }
    *panel_stride = dn * width;
    return scratch;
  }

 private:
  const MicroKernel& uk_;
  const float* base_;
  const int64_t* offsets_;
  int64_t p0_, ow_, wph_;
  mutable std::vector<GatherPiece> pieces_, padded_;
  mutable std::vector<int> count_;
};

// Rows per block when `rows` are split into about `parts` blocks of whole mr-row panels.
int64_t row_block(int64_t rows, int64_t mr, int64_t parts) {
  const int64_t panels = (rows + mr - 1) / mr;
  return std::max<int64_t>(1, (panels + parts - 1) / parts) * mr;
}

// Sizes of the implicit-GEMM path's padded phase-plane copy of one (image, group).
struct ImplicitLayout {
  int64_t hp, wp, hph, wph, pplane, cplane, image, wide;
};

// Fills `l` and returns true if the implicit path suits `g`: every size fits in int64, the phase planes are
// not much larger than the padded image (they grow as sh * sw when the stride exceeds the padded size), the
// wide output rows do not compute many more columns than they keep, and the padded copy is not much larger
// than the im2col matrix (large strides skip most of the image). 3x3 / 5x5 / 7x7 convolutions with stride 1-4,
// dilations and 1x1 strided ones all stay on this path.
bool implicit_layout(const ConvGeometry& g, const MicroKernel& uk, ImplicitLayout* l) {
  int64_t t = 0;
  if (!add_ok(g.h, g.pad_t, &l->hp) || !add_ok(l->hp, g.pad_b, &l->hp) || !add_ok(g.w, g.pad_l, &l->wp) ||
      !add_ok(l->wp, g.pad_r, &l->wp) || l->hp <= 0 || l->wp <= 0)
    return false;
  l->hph = l->hp / g.sh + (l->hp % g.sh != 0);
  l->wph = l->wp / g.sw + (l->wp % g.sw != 0);
  int64_t padded = 0, im2col = 0, out_plane = 0;
  if (!mul_ok(l->hph, l->wph, &l->pplane) || !mul_ok(g.sh, g.sw, &t) || !mul_ok(t, l->pplane, &l->cplane) ||
      !mul_ok(g.cg(), l->cplane, &l->image) || !mul_ok(g.kw, g.dw, &t) || !add_ok(l->image, t, &l->image) ||
      !add_ok(l->image, uk.nr + 16, &l->image) || !mul_ok(g.oh, l->wph, &l->wide) ||
      !mul_ok(l->hp, l->wp, &padded) || !mul_ok(g.oh, g.ow, &out_plane) || !mul_ok(g.kg(), out_plane, &im2col))
    return false;
  // Written as divisions so that no comparison overflows.
  const int64_t copy = l->image - t - uk.nr - 16;  // cg * cplane
  return (l->cplane - 4096) / 2 <= padded && (l->wide - 256) / 2 <= out_plane && (copy - 4096) / 4 <= im2col;
}

// dst[j] = src[2 * j], j < n (one clone per ISA, so that it vectorizes with permutes).
INQ_CLONES
void copy_stride2(const float* __restrict src, float* __restrict dst, int64_t n) {
  for (int64_t j = 0; j < n; ++j) dst[j] = src[2 * j];
}

// Copies channel c of one (image, group) into its zero-padded phase planes (layout `l`).
void pad_channel(const ConvGeometry& g, const ImplicitLayout& l, const float* xg, float* padded, int64_t c) {
  const int64_t hph = l.hph, wph = l.wph, pplane = l.pplane, cplane = l.cplane;
  const float* src = xg + c * g.h * g.w;
  for (int64_t a = 0; a < g.sh; ++a)
    for (int64_t b = 0; b < g.sw; ++b) {
      float* dst = padded + c * cplane + (a * g.sw + b) * pplane;
      for (int64_t i = 0; i < hph; ++i) {
        float* row = dst + i * wph;
        const int64_t ih = i * g.sh + a - g.pad_t;
        if (ih < 0 || ih >= g.h) {
          for (int64_t j = 0; j < wph; ++j) row[j] = 0.0f;
          continue;
        }
        const float* srow = src + ih * g.w;
        // iw = j * sw + b - pad_l must lie in [0, w).
        const int64_t off = b - g.pad_l;
        const int64_t lo = std::min(wph, off >= 0 ? 0 : (-off + g.sw - 1) / g.sw);
        const int64_t hi = std::max(lo, std::min(wph, g.w - off <= 0 ? 0 : (g.w - off + g.sw - 1) / g.sw));
        for (int64_t j = 0; j < lo; ++j) row[j] = 0.0f;
        if (g.sw == 1) {
          const float* s = srow + off;
          for (int64_t j = lo; j < hi; ++j) row[j] = s[j];
        } else if (g.sw == 2) {
          copy_stride2(srow + off + 2 * lo, row + lo, hi - lo);
        } else {
          for (int64_t j = lo; j < hi; ++j) row[j] = srow[j * g.sw + off];
        }
        for (int64_t j = hi; j < wph; ++j) row[j] = 0.0f;
      }
    }
}

// Copies every channel of one (image, group) into its padded phase planes and zeroes the slack after them. Tasks
// take runs of consecutive channels, up to 16 KB of planes (at least one channel) and at least 8 tasks where
// there are 8 channels: a task per channel costs more to hand out than a 16x16 plane takes to copy.
void pad_image(const ConvGeometry& g, const ImplicitLayout& l, const float* xg, float* padded,
               const TaskRunner& runner) {
  const int64_t cg = g.cg();
  const int64_t per = std::max<int64_t>(1, std::min(4096 / std::max<int64_t>(1, l.cplane), (cg + 7) / 8));
  runner.run(static_cast<size_t>((cg + per - 1) / per), [&](size_t t) {
    const int64_t c0 = static_cast<int64_t>(t) * per;
    for (int64_t c = c0; c < std::min(cg, c0 + per); ++c) pad_channel(g, l, xg, padded, c);
  });
  std::fill(padded + cg * l.cplane, padded + l.image, 0.0f);
}

// Whether the implicit path gathers exact output columns (see conv_implicit). INQ_ONNX_CONV=wide / exact
// forces either (testing and comparison).
bool exact_columns(const ConvGeometry& g, const ImplicitLayout& l) {
  static const int forced = [] {
    const char* e = std::getenv("INQ_ONNX_CONV");
    return !e ? 0 : std::string(e) == "wide" ? 1 : std::string(e) == "exact" ? 2 : 0;
  }();
  if (forced) return forced == 2;
  return g.ow >= 8 && (l.wph - g.ow) * 16 > l.wph;
}

// Implicit GEMM: no im2col. The padded image is split into sh x sw phase planes (phase (a, b) holds padded
// rows a, a+sh, ... and columns b, b+sw, ...), so that for every tap (c, ki, kj) the input seen by consecutive
// output columns is a contiguous run of one phase plane; the micro-kernel reads those runs in place through a
// per-tap offset table. Output rows are computed wide (wph columns, those >= OW dropped).
void conv_implicit(const ConvGeometry& g, const ImplicitLayout& l, const ConvWeights& weights, const float* x,
                   const Epilogue& ep, float* y, const TaskRunner& runner) {
  const float* bias = ep.bias;
  const MicroKernel& uk = weights.kernel();
  const int64_t cg = g.cg(), mg = g.mg(), kg = g.kg();
  const int64_t wph = l.wph, pplane = l.pplane, cplane = l.cplane;
  const int64_t image = l.image;  // cg planes plus slack for reads of dropped columns
  const ScratchPool::Lease padded_lease = scratch_floats(weights, image);
  float* padded = padded_lease.as<float>();
  std::vector<int64_t> offsets(static_cast<size_t>(kg));
  for (int64_t c = 0, d = 0; c < cg; ++c)
    for (int64_t ki = 0; ki < g.kh; ++ki)
      for (int64_t kj = 0; kj < g.kw; ++kj) {
        const int64_t r = ki * g.dh, q = kj * g.dw;
        offsets[d++] = c * cplane + ((r % g.sh) * g.sw + q % g.sw) * pplane + (r / g.sh) * wph + q / g.sw;
      }
  const int64_t wide = l.wide, out_plane = g.out_plane();
  // Exact columns: when the dropped columns of the wide rows would cost more than packing the kept ones (about
  // 1/16 of the work; the packed panels are read by every row panel of the task), B panels are gathered from
  // the phase planes without the dropped columns and the GEMM writes the output in place.
  const bool exact = exact_columns(g, l);
  const int64_t cols = exact ? out_plane : wide;
  int64_t nc = std::max<int64_t>(1, 256 / uk.nr) * uk.nr;
  if ((cols + nc - 1) / nc < 8) nc = std::max<int64_t>(uk.nr, (cols + 7) / 8 / uk.nr * uk.nr);
  const int64_t col_blocks = (cols + nc - 1) / nc;
  // Few column blocks (small images): split the output channels too, so that every thread has work and each
  // reads only its share of the weights.
  int64_t mb = mg;
  if (col_blocks < 8) mb = row_block(mg, uk.mr, (8 + col_blocks - 1) / col_blocks);
  const int64_t row_blocks = (mg + mb - 1) / mb;

  // Output columns [q0, q0 + qn) x output channels [r0, r0 + rn) of one (image, group) from its padded copy.
  auto gemm_columns = [&](const float* padded, int64_t img, int64_t q0, int64_t qn, int64_t r0, int64_t rn) {
    const int64_t n = img / g.group, grp = img % g.group;
    if (exact) {
      const ExactPlanePanels b(uk, padded, offsets.data(), q0, g.ow, wph);
      const OffsetPanels a(weights.row_panels(grp), r0);
      const int64_t at = (n * g.m + grp * mg + r0) * out_plane + q0;
      gemm(uk, conv_gemm(weights, rn, qn, kg, a, b, y + at, out_plane, bias ? bias + grp * mg + r0 : nullptr));
      if (ep.summand || ep.activation != Activation::kNone)
        finish_rows(ep, y + at, out_plane, y + at, out_plane, rn, qn, ep.summand ? ep.summand + at : nullptr,
                    out_plane);
      return;
    }
    const ScratchPool::Lease out_lease = scratch_floats(weights, rn * qn);
    float* out = out_lease.as<float>();
    const InPlaceRows src(padded, offsets.data());
    const OffsetPanels b(src, q0);
    const OffsetPanels a(weights.row_panels(grp), r0);
    gemm(uk, conv_gemm(weights, rn, qn, kg, a, b, out, qn, bias ? bias + grp * mg + r0 : nullptr));
    // Keep the columns ow < OW of the wide block.
    const int64_t y_off = (n * g.m + grp * mg + r0) * out_plane;
    for (int64_t q = q0; q < q0 + qn;) {
      const int64_t oh = q / wph, ow = q % wph;
      const int64_t len = std::min(q0 + qn - q, wph - ow);
      const int64_t keep = std::min(len, std::max<int64_t>(0, g.ow - ow));
      if (keep > 0) {
        const int64_t at = y_off + oh * g.ow + ow;
        finish_rows(ep, out + (q - q0), qn, y + at, out_plane, rn, keep, ep.summand ? ep.summand + at : nullptr,
                    out_plane);
      }
      q += len;
    }
  };
  auto image_input = [&](int64_t img) { return x + ((img / g.group) * g.c + (img % g.group) * cg) * g.h * g.w; };

  const int64_t images = g.n * g.group;
  // Small images (a few hundred output positions) give the pool too little work per image: hand out whole
  // images instead, each padded into its task's own scratch.
  if (images > 1 && cols * mg * kg < (int64_t{1} << 21)) {
    runner.run(static_cast<size_t>(images), [&](size_t t) {
      const int64_t img = static_cast<int64_t>(t);
      const ScratchPool::Lease own_lease = scratch_floats(weights, image);
      float* own = own_lease.as<float>();
      for (int64_t c = 0; c < cg; ++c) pad_channel(g, l, image_input(img), own, c);
      for (int64_t j = cg * cplane; j < image; ++j) own[j] = 0.0f;
      gemm_columns(own, img, 0, cols, 0, mg);
    });
    return;
  }
  // One (image, group) at a time so that its padded copy stays in cache while the GEMM reads it.
  for (int64_t img = 0; img < images; ++img) {
    pad_image(g, l, image_input(img), padded, runner);
    runner.run(static_cast<size_t>(col_blocks * row_blocks), [&](size_t t) {
      const int64_t q0 = static_cast<int64_t>(t) / row_blocks * nc, r0 = static_cast<int64_t>(t) % row_blocks * mb;
      gemm_columns(padded, img, q0, std::min(nc, cols - q0), r0, std::min(mb, mg - r0));
    });
  }
}

// Channel rows of the output y + at (row stride ldy, channels from ch0) from a GEMM result C with positions as
// rows and channels as columns, with the epilogue (the summand has the output's layout).
void store_channels(const MicroKernel& uk, const Epilogue& ep, const float* c, int64_t ldc, int64_t positions,
                    int64_t channels, int64_t ch0, float* y, int64_t at, int64_t ldy) {
  TransposedStoreArgs s;
  s.c = c, s.ldc = ldc, s.positions = positions, s.channels = channels;
  s.bias = ep.bias ? ep.bias + ch0 : nullptr;
  s.summand = ep.summand ? ep.summand + at : nullptr;
  y += at;
  s.ldz = ldy, s.lo = ep.lower(), s.hi = ep.upper(), s.y = y, s.ldy = ldy;
  if (uk.store_transposed) return uk.store_transposed(s);
  for (int64_t j = 0; j < channels; ++j) {
    float* dst = y + j * ldy;
    const float* src = c + j;
    const float bias = s.bias ? s.bias[j] : 0.0f;
    for (int64_t p = 0; p < positions; ++p) dst[p] = src[p * ldc] + bias;
  }
  if (ep.summand || ep.activation != Activation::kNone)
    finish_rows(ep, y, ldy, y, ldy, channels, positions, s.summand, ldy);
}

// Whether the pixel-rows GEMM suits `g`: small output planes, where vectors along output positions would leave
// most of a 48-column tile empty (7x7: 49 positions in 64 columns, wide rows 63), while output channels come in
// multiples of the vector width. From 14x14 (196 positions, 94% of 208 columns) the channels-as-rows paths win
// (measured: pointwise 256->512 at 14x14 0.52 ms against 0.69 ms), the transposed store costing more there.
bool pixel_rows_suit(const ConvGeometry& g, const MicroKernel& uk) {
  return g.out_plane() <= 64 && g.mg() >= uk.nr && g.kg() >= 16 && g.in_plane() < (int64_t{1} << 31);
}

// Pixel-rows GEMM: C (positions x channels) = im2col (positions x depth, A) * weights^T (B panels of output
// channels), then stored transposed into NCHW with the epilogue. The im2col panels of one (image, group) are
// packed once, in parallel, and shared by the tasks, which split the output channels.
void conv_pixel_rows(const ConvGeometry& g, const ConvWeights& weights, const float* x, const Epilogue& ep,
                     float* y, const TaskRunner& runner) {
  const MicroKernel& uk = weights.kernel();
  const int64_t cg = g.cg(), mg = g.mg(), kg = g.kg(), plane = g.out_plane();
  const int64_t row_panels = (plane + uk.mr - 1) / uk.mr, padded_plane = row_panels * uk.mr;
  const ScratchPool::Lease packed_lease = scratch_floats(weights, padded_plane * kg);
  float* packed = packed_lease.as<float>();
  // Input offset within a channel plane for each (tap, output position), -1 for padding and past the plane.
  const int64_t taps = g.kh * g.kw;
  std::vector<int32_t> sources(static_cast<size_t>(taps * padded_plane), -1);
  for (int64_t ki = 0, tap = 0; ki < g.kh; ++ki)
    for (int64_t kj = 0; kj < g.kw; ++kj, ++tap)
      for (int64_t p = 0; p < plane; ++p) {
        const int64_t ih = p / g.ow * g.sh - g.pad_t + ki * g.dh, iw = p % g.ow * g.sw - g.pad_l + kj * g.dw;
        if (ih >= 0 && ih < g.h && iw >= 0 && iw < g.w)
          sources[tap * padded_plane + p] = static_cast<int32_t>(ih * g.w + iw);
      }
  const ScratchPool::Lease c_lease = scratch_floats(weights, plane * mg);
  float* c = c_lease.as<float>();
  const int64_t nb = row_block(mg, uk.nr, 16);  // fine tasks of whole nr-wide channel panels: even thread loads
  const int64_t col_blocks = (mg + nb - 1) / nb;
  for (int64_t img = 0; img < g.n * g.group; ++img) {
    const int64_t n = img / g.group, grp = img % g.group;
    const float* xg = x + (n * g.c + grp * cg) * g.in_plane();
    // Tasks over input channels: each packs the depth rows (c, ki, kj) of its channels into every panel.
    const int64_t chunk = std::max<int64_t>(1, cg / 8);
    runner.run(static_cast<size_t>((cg + chunk - 1) / chunk), [&](size_t t) {
      const int64_t c0 = static_cast<int64_t>(t) * chunk, c1 = std::min(cg, c0 + chunk);
      for (int64_t ch = c0; ch < c1; ++ch) {
        const float* xc = xg + ch * g.in_plane();
        for (int64_t tap = 0; tap < taps; ++tap) {
          const int32_t* src = sources.data() + tap * padded_plane;
          float* row = packed + (ch * taps + tap) * uk.mr;
          for (int64_t p = 0; p < padded_plane; p += uk.mr, row += kg * uk.mr)
            for (int i = 0; i < uk.mr; ++i) row[i] = src[p + i] >= 0 ? xc[src[p + i]] : 0.0f;
        }
      }
    });
    const PackedView a(packed, kg, uk.mr);
    runner.run(static_cast<size_t>(col_blocks), [&](size_t t) {
      const int64_t c0 = static_cast<int64_t>(t) * nb, cn = std::min(nb, mg - c0);
      const OffsetPanels b(weights.column_panels(grp), c0);
      gemm(uk, conv_gemm(weights, plane, cn, kg, a, b, c + c0, mg, nullptr));
      const int64_t ch0 = grp * mg + c0;
      store_channels(uk, ep, c + c0, mg, plane, cn, ch0, y, (n * g.m + ch0) * plane, plane);
    });
  }
}

// One output plane of a depthwise convolution: y = bias + sum over (ki, kj) of w * shifted x, reading x in
// place with bounds per tap. Used when a padded copy would be much larger than the image.
void depthwise_plane_direct(const ConvGeometry& g, const float* x, const float* w, float bias, float* y) {
  for (int64_t oh = 0; oh < g.oh; ++oh) {
    float* yrow = y + oh * g.ow;
    for (int64_t ow = 0; ow < g.ow; ++ow) yrow[ow] = bias;
    for (int64_t ki = 0; ki < g.kh; ++ki) {
      const int64_t ih = oh * g.sh - g.pad_t + ki * g.dh;
      if (ih < 0 || ih >= g.h) continue;
      const float* xrow = x + ih * g.w;
      for (int64_t kj = 0; kj < g.kw; ++kj) {
        const float wv = w[ki * g.kw + kj];
        const int64_t off = kj * g.dw - g.pad_l;  // iw = ow * sw + off
        // Valid ow: 0 <= ow*sw + off < w.
        const int64_t lo = off >= 0 ? 0 : (-off + g.sw - 1) / g.sw;
        const int64_t hi = std::min(g.ow, g.w - off <= 0 ? 0 : (g.w - off + g.sw - 1) / g.sw);
        if (g.sw == 1) {
          const float* xs = xrow + off;
          for (int64_t ow = lo; ow < hi; ++ow) yrow[ow] += wv * xs[ow];
        } else {
          for (int64_t ow = lo; ow < hi; ++ow) yrow[ow] += wv * xrow[ow * g.sw + off];
        }
      }
    }
  }
}

// Padded-plane geometry of the depthwise fast path: every tap of every output reads inside the plane.
struct DepthwisePlane {
  int64_t hp, wp;
  explicit DepthwisePlane(const ConvGeometry& g)
      : hp((g.oh - 1) * g.sh + (g.kh - 1) * g.dh + 1), wp((g.ow - 1) * g.sw + (g.kw - 1) * g.dw + 1) {}
  int64_t size() const { return hp * wp; }
};

// Copies x into the zero-padded plane row by row (edges zero-filled, the middle a plain copy).
void pad_plane(const ConvGeometry& g, const DepthwisePlane& p, const float* x, float* plane) {
  const int64_t c0 = std::clamp<int64_t>(g.pad_l, 0, p.wp), c1 = std::clamp<int64_t>(g.pad_l + g.w, 0, p.wp);
  for (int64_t r = 0; r < p.hp; ++r) {
    float* row = plane + r * p.wp;
    const int64_t ih = r - g.pad_t;
    if (ih < 0 || ih >= g.h || c0 >= c1) {
      std::fill(row, row + p.wp, 0.0f);
      continue;
    }
    std::fill(row, row + c0, 0.0f);
    std::copy(x + ih * g.w + (c0 - g.pad_l), x + ih * g.w + (c1 - g.pad_l), row + c0);
    std::fill(row + c1, row + p.wp, 0.0f);
  }
}

// Row by row, tap by tap over the padded plane: the loops over a whole output row have no bounds to check and
// vectorize. SW is compile-time for stride 1 and 2 (0: from the geometry). One clone per ISA is built and
// picked at load time (ifunc), so the library still runs anywhere.
template <int SW>
INQ_CLONES
void depthwise_rows(const ConvGeometry& g, const DepthwisePlane& p, const float* plane, const float* w, float bias,
                    float* y) {
  const int64_t sw = SW ? SW : g.sw;
  for (int64_t oh = 0; oh < g.oh; ++oh) {
    float* __restrict yrow = y + oh * g.ow;
    for (int64_t ow = 0; ow < g.ow; ++ow) yrow[ow] = bias;
    for (int64_t ki = 0; ki < g.kh; ++ki) {
      const float* prow = plane + (oh * g.sh + ki * g.dh) * p.wp;
      for (int64_t kj = 0; kj < g.kw; ++kj) {
        const float wv = w[ki * g.kw + kj];
        const float* __restrict src = prow + kj * g.dw;
        for (int64_t ow = 0; ow < g.ow; ++ow) yrow[ow] += wv * src[ow * sw];
      }
    }
  }
}

void depthwise_plane_padded(const ConvGeometry& g, const float* x, const float* w, float bias, float* y,
                            float* plane) {
  const DepthwisePlane p(g);
  pad_plane(g, p, x, plane);
  if (g.sw == 1) return depthwise_rows<1>(g, p, plane, w, bias, y);
  if (g.sw == 2) return depthwise_rows<2>(g, p, plane, w, bias, y);
  depthwise_rows<0>(g, p, plane, w, bias, y);
}

// Panel rows of the output-row GEMM for `g`: the largest divisor of OW that is at most mr, or 0 when that
// leaves too many kernel rows idle (less than 7 of 8).
int64_t output_row_panel(const ConvGeometry& g, const MicroKernel& uk) {
  if (uk.vector <= 0 || uk.mr > 8 || g.ow <= 0) return 0;
  int64_t r = std::min<int64_t>(uk.mr, g.ow);
  while (g.ow % r != 0) --r;
  return r * 8 >= uk.mr * 7 ? r : 0;
}

// Whether the output-row variant of the pixel-rows GEMM suits `g` (see conv_output_rows): small planes (the
// pixel-rows cases) and spatial kernels on planes up to 32x32, where output positions as GEMM columns would
// compute partly empty vectors (14x14: 208 columns for 196) or pay for gathering around the dropped columns
// (measured 3x3 at 28x28: 2.08 ms against 2.15; at 56x56 the wide rows win, 2.15 ms against 2.19).
bool output_rows_suit(const ConvGeometry& g, const MicroKernel& uk, ImplicitLayout* l) {
  const int64_t rp = output_row_panel(g, uk);
  if (force_im2col() || rp == 0 || g.mg() < uk.nr || g.kg() < 16) return false;
  for (int v = 1; v * uk.vector <= uk.nr && v <= 4; ++v)
    if (!uk.a_in_place[rp - 1][v - 1]) return false;  // every tile needs its rp-row variant
  if (!implicit_layout(g, uk, l)) return false;
  if (pixel_rows_suit(g, uk)) return true;
  return g.kh * g.kw > 1 && g.out_plane() <= 1024;
}

// Pixel-rows GEMM with A panels of rp consecutive positions of one output row, rp dividing OW (7x7 and 14x14
// planes: panels of 7 rows, computed by the kernel's exact 7-row variants, instead of 8-row panels and edges).
// The kernel reads A in place from the padded phase planes of the implicit path, where those positions are
// contiguous for every tap; B is the weights as column panels. C (positions x channels) is stored transposed.
// Tasks split positions and output channels.
void conv_output_rows(const ConvGeometry& g, const ImplicitLayout& l, const ConvWeights& weights, const float* x,
                      const Epilogue& ep, float* y, const TaskRunner& runner) {
  const MicroKernel& uk = weights.kernel();
  const int64_t nr = uk.nr;
  const int64_t cg = g.cg(), mg = g.mg(), kg = g.kg(), plane = g.out_plane(), ow = g.ow;
  const int64_t rp = output_row_panel(g, uk), per_row = ow / rp, panels = g.oh * per_row;
  const int64_t cw = (mg + nr - 1) / nr * nr;  // C row stride: edge tiles may write up to a whole panel
  const ScratchPool::Lease c_lease = scratch_floats(weights, plane * cw);
  float* c = c_lease.as<float>();
  const ScratchPool::Lease padded_lease = scratch_floats(weights, l.image);
  float* padded = padded_lease.as<float>();
  std::vector<int64_t> offsets(static_cast<size_t>(kg));
  for (int64_t ch = 0, d = 0; ch < cg; ++ch)
    for (int64_t ki = 0; ki < g.kh; ++ki)
      for (int64_t kj = 0; kj < g.kw; ++kj) {
        const int64_t r = ki * g.dh, q = kj * g.dw;
        offsets[d++] = ch * l.cplane + ((r % g.sh) * g.sw + q % g.sw) * l.pplane + (r / g.sh) * l.wph + q / g.sw;
      }
  const int64_t kblocks = (kg + 255) / 256, kc_max = (kg + kblocks - 1) / kblocks;
  // Tasks: blocks of whole channel panels, and blocks of row panels when there are few channel blocks.
  const int64_t nb = row_block(mg, nr, 16);
  const int64_t col_blocks = (mg + nb - 1) / nb;
  const int64_t pb =
      col_blocks >= 8 ? panels : std::max<int64_t>(1, (panels + 1) / ((8 + col_blocks - 1) / col_blocks));
  const int64_t panel_blocks = (panels + pb - 1) / pb;
  for (int64_t img = 0; img < g.n * g.group; ++img) {
    const int64_t n = img / g.group, grp = img % g.group;
    const float* xg = x + (n * g.c + grp * cg) * g.in_plane();
    pad_image(g, l, xg, padded, runner);
    runner.run(static_cast<size_t>(col_blocks * panel_blocks), [&](size_t t) {
      const int64_t cb = static_cast<int64_t>(t) / panel_blocks, qb = static_cast<int64_t>(t) % panel_blocks;
      const PrepackedPanels& wp = weights.column_panels(grp);
      const int64_t c0 = cb * nb, cn = std::min(nb, mg - c0);
      const int64_t q0 = qb * pb, q1 = std::min(panels, q0 + pb);
      for (int64_t pc = 0; pc < kg; pc += kc_max) {
        const int64_t kc = std::min(kc_max, kg - pc);
        for (int64_t jr = c0; jr < c0 + cn; jr += nr) {
          const int64_t nw = std::min(nr, c0 + cn - jr);
          int64_t stride = 0;
          const float* bpan = wp.panels(jr, nw, pc, kc, static_cast<int>(nr), nullptr, &stride);
          const InPlaceAKernelFn fn = uk.a_in_place[rp - 1][(nw + uk.vector - 1) / uk.vector - 1];
          // The next depth block of this weight panel follows the current one: the kernels fetch it into L2,
          // spread over the row panels (a cold weight stream is then read ahead of its use).
          const float* next = bpan + kc * nr;
          const int64_t next_lines = pc + kc < kg ? std::min(kc_max, kg - pc - kc) * nr / 16 : 0;
          const int64_t per_call = (next_lines + (q1 - q0) - 1) / (q1 - q0);
          for (int64_t q = q0; q < q1; ++q) {
            const int64_t l0 = (q - q0) * per_call, l1 = std::min(next_lines, l0 + per_call);
            fn(kc, padded + q / per_row * l.wph + q % per_row * rp, offsets.data() + pc, bpan, c + q * rp * cw + jr,
               cw, pc > 0 ? 1 : 0, next + 16 * l0, std::min(kc, std::max<int64_t>(0, l1 - l0)));
          }
        }
      }
      const int64_t ch0 = grp * mg + c0, p0 = q0 * rp;
      store_channels(uk, ep, c + p0 * cw + c0, cw, (q1 - q0) * rp, cn, ch0, y, (n * g.m + ch0) * plane + p0, plane);
    });
  }
}

}  // namespace

void conv_forward(const ConvGeometry& g, const ConvWeights& weights, const float* x, const Epilogue& ep, float* y,
                  const TaskRunner& runner) {
  const int64_t in_plane = g.in_plane(), out_plane = g.out_plane();
  const float* bias = ep.bias;
  const bool finish = ep.summand || ep.activation != Activation::kNone;
  if (weights.depthwise()) {
    const int64_t ksize = g.kh * g.kw;
    const float* w = weights.dense().data();
    // A padded copy pays off unless huge strides, dilations or pads make it much larger than the image.
    const int64_t plane = DepthwisePlane(g).size();
    const bool padded = plane <= 4 * (in_plane + out_plane) + 4096;
    const MicroKernel& uk = weights.kernel();
    const int64_t phases = depthwise_scratch_floats(g.oh, g.ow, g.kh, g.kw, g.sh, g.sw, g.dh, g.dw);
    if (uk.depthwise && ksize <= kDepthwiseMaxTaps && phases <= 4 * (in_plane + out_plane) + 4096) {
      runner.run(static_cast<size_t>(g.n * g.m), [&](size_t t) {
        const int64_t c = static_cast<int64_t>(t) % g.m, at = static_cast<int64_t>(t) * out_plane;
        DepthwisePlaneArgs a;
        a.x = x + static_cast<int64_t>(t) * in_plane;
        a.w = w + c * ksize;
        a.bias = bias ? bias[c] : 0.0f;
        a.summand = ep.summand ? ep.summand + at : nullptr;
        a.lo = ep.lower(), a.hi = ep.upper();
        a.y = y + at;
        const ScratchPool::Lease phases_lease = scratch_floats(weights, phases);
        a.scratch = phases_lease.as<float>();
        a.h = g.h, a.w_in = g.w, a.kh = g.kh, a.kw = g.kw, a.sh = g.sh, a.sw = g.sw, a.dh = g.dh, a.dw = g.dw;
        a.pad_t = g.pad_t, a.pad_l = g.pad_l, a.oh = g.oh, a.ow = g.ow;
        uk.depthwise(a);
      });
      return;
    }
    runner.run(static_cast<size_t>(g.n * g.m), [&](size_t t) {
      const int64_t c = static_cast<int64_t>(t) % g.m;
      const float* xc = x + static_cast<int64_t>(t) * in_plane;
      float* yc = y + static_cast<int64_t>(t) * out_plane;
      const float b = bias ? bias[c] : 0.0f;
      if (padded) {
        depthwise_plane_padded(g, xc, w + c * ksize, b, yc, scratch_floats(weights, plane).as<float>());
      } else {
        depthwise_plane_direct(g, xc, w + c * ksize, b, yc);
      }
      if (finish)
        finish_rows(ep, yc, out_plane, yc, out_plane, 1, out_plane,
                    ep.summand ? ep.summand + static_cast<int64_t>(t) * out_plane : nullptr, out_plane);
    });
    return;
  }

  // 1x1 with stride > 1 and no padding reads one input pixel in sh * sw: gather those into a compact image and
  // run the stride-1 pointwise paths on it (instead of copying every phase plane).
  if (g.kh == 1 && g.kw == 1 && (g.sh > 1 || g.sw > 1) && g.pad_t == 0 && g.pad_l == 0 && g.pad_b <= 0 &&
      g.pad_r <= 0 && !force_im2col()) {
    ConvGeometry sub = g;
    sub.h = g.oh, sub.w = g.ow, sub.sh = sub.sw = 1, sub.pad_b = sub.pad_r = 0;
    const ScratchPool::Lease xs_lease = scratch_floats(weights, g.n * g.c * out_plane);
    float* xs = xs_lease.as<float>();
    runner.run(static_cast<size_t>(g.n * g.c), [&](size_t t) {
      const float* src = x + static_cast<int64_t>(t) * in_plane;
      float* dst = xs + static_cast<int64_t>(t) * out_plane;
      for (int64_t i = 0; i < g.oh; ++i) {
        const float* row = src + i * g.sh * g.w;
        for (int64_t j = 0; j < g.ow; ++j) dst[i * g.ow + j] = row[j * g.sw];
      }
    });
    conv_forward(sub, weights, xs, ep, y, runner);
    return;
  }
  if (winograd_suits(g)) {
    conv_winograd(g, weights.kernel(), weights.winograd(), weights.pool(), x, ep, y, runner);
    return;
  }
  ImplicitLayout rows_layout;
  if (output_rows_suit(g, weights.kernel(), &rows_layout)) {
    weights.column_panels(0);  // packed here once, not inside the tasks
    conv_output_rows(g, rows_layout, weights, x, ep, y, runner);
    return;
  }
  if (pixel_rows_suit(g, weights.kernel()) && !force_im2col()) {
    weights.column_panels(0);  // packed here once, not inside the tasks
    conv_pixel_rows(g, weights, x, ep, y, runner);
    return;
  }
  weights.row_panels(0);
  const bool pointwise_plain = g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.pad_t == 0 &&
                               g.pad_l == 0 && g.pad_b == 0 && g.pad_r == 0;
  ImplicitLayout layout;
  if (!pointwise_plain && !force_im2col() && implicit_layout(g, weights.kernel(), &layout)) {
    conv_implicit(g, layout, weights, x, ep, y, runner);
    return;
  }
  const MicroKernel& uk = weights.kernel();
  const int64_t mg = g.mg(), cg = g.cg(), kg = g.kg();
  const bool pointwise = g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.pad_t == 0 && g.pad_l == 0 &&
                         g.pad_b == 0 && g.pad_r == 0;
  // Column blocks: about 256 output positions, smaller when there are too few tasks for the pool.
  const int64_t images = g.n * g.group;
  const int64_t target_tasks = 16;
  int64_t nc = std::max<int64_t>(1, 256 / uk.nr) * uk.nr;
  if (images * ((out_plane + nc - 1) / nc) < target_tasks) {
    const int64_t blocks = (target_tasks + images - 1) / images;
    nc = std::max<int64_t>(uk.nr, (out_plane + blocks - 1) / blocks / uk.nr * uk.nr);
  }
  const int64_t col_blocks = (out_plane + nc - 1) / nc;
  // Too few tasks still (small planes): split the output channels as well.
  int64_t mb = mg;
  if (images * col_blocks < target_tasks) mb = row_block(mg, uk.mr, (target_tasks + images * col_blocks - 1) /
                                                                      (images * col_blocks));
  const int64_t row_blocks = (mg + mb - 1) / mb;
  std::vector<int64_t> plane_offsets;  // pointwise: depth d (input channel) is plane d of the image
  if (pointwise)
    for (int64_t d = 0; d < cg; ++d) plane_offsets.push_back(d * in_plane);
  runner.run(static_cast<size_t>(images * col_blocks * row_blocks), [&](size_t t) {
    const int64_t r0 = static_cast<int64_t>(t) % row_blocks * mb, rn = std::min(mb, mg - r0);
    const int64_t tile = static_cast<int64_t>(t) / row_blocks;
    const int64_t img = tile / col_blocks, blk = tile % col_blocks;
    const int64_t n = img / g.group, grp = img % g.group;
    const int64_t p0 = blk * nc, pn = std::min(nc, out_plane - p0);
    const float* xg = x + (n * g.c + grp * cg) * in_plane;
    const int64_t at = (n * g.m + grp * mg + r0) * out_plane + p0;
    const OffsetPanels a(weights.row_panels(grp), r0);
    GemmArgs args;
    args.scratch = &weights.pool();
    args.m = rn;
    args.n = pn;
    args.k = kg;
    args.a = &a;
    args.c = y + at;
    args.ldc = out_plane;
    args.row_bias = bias ? bias + grp * mg + r0 : nullptr;
    if (pointwise) {
      // The input's channel planes are the B rows: read in place for whole vectors of columns (no task packs
      // them again), packed only for the last few columns, whose vector would read past the input's end.
      const int64_t whole = uk.vector > 0 ? pn / uk.vector * uk.vector : 0;
      if (whole > 0) {
        const InPlaceRows b(xg + p0, plane_offsets.data());
        args.b = &b;
        args.n = whole;
        gemm(uk, args);
      }
      if (whole < pn) {
        const StridedPanels b(xg + p0 + whole, 1, in_plane);
        args.b = &b;
        args.n = pn - whole;
        args.c = y + at + whole;
        args.row_bias = bias ? bias + grp * mg + r0 : nullptr;
        gemm(uk, args);
      }
    } else {
      const Im2colPanels im2col(xg, g);
      const OffsetPanels b(im2col, p0);
      args.b = &b;
      gemm(uk, args);
    }
    if (finish)
      finish_rows(ep, y + at, out_plane, y + at, out_plane, rn, pn, ep.summand ? ep.summand + at : nullptr, out_plane);
  });
}

}  // namespace inq
