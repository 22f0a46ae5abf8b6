// Integer-mode kernels against a scalar reference of the same integer arithmetic (quantize, int32 sums, one
// float rescale), bit-exact (memcmp), for every integer ISA path this CPU supports, serial and threaded.
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kernels/conv.h"
#include "kernels/cpu_features.h"
#include "kernels/qconv.h"
#include "kernels/qgemm.h"
#include "native_check.h"

using namespace inq;

// ---- reference ----
static QuantParams ref_params(const std::vector<float>& x, QuantParams q) {
  if (q.scale > 0) return q;
  float lo = 0, hi = 0;
  for (float v : x) lo = std::fmin(lo, v), hi = std::fmax(hi, v);
  QuantParams p;
  p.scale = hi == lo ? 1.0f : (hi - lo) / 255.0f;
  p.zero_point = static_cast<int32_t>(std::nearbyint(std::fmin(255.0f, std::fmax(0.0f, 0.0f - lo / p.scale))));
  return p;
}
static int32_t ref_q(float x, QuantParams p) {
  const int64_t v = static_cast<int64_t>(std::nearbyint(x / p.scale)) + p.zero_point;
  return static_cast<int32_t>(v < 0 ? 0 : v > 255 ? 255 : v);
}

static std::vector<float> ref_conv(const ConvGeometry& g, const std::vector<int16_t>& lv, const std::vector<float>& unit,
                                   const std::vector<float>& x, QuantParams q0, const Epilogue& ep) {
  const QuantParams p = ref_params(x, q0);
  std::vector<float> y(static_cast<size_t>(g.n * g.m * g.oh * g.ow));
  const int64_t cg = g.cg(), mg = g.mg();
  for (int64_t n = 0; n < g.n; ++n)
    for (int64_t m = 0; m < g.m; ++m) {
      const int64_t grp = m / mg;
      int32_t rowsum = 0;
      for (int64_t i = 0; i < cg * g.kh * g.kw; ++i) rowsum += lv[static_cast<size_t>(m * cg * g.kh * g.kw + i)];
      for (int64_t oh = 0; oh < g.oh; ++oh)
        for (int64_t ow = 0; ow < g.ow; ++ow) {
          int32_t acc = 0;
          for (int64_t c = 0; c < cg; ++c)
            for (int64_t ki = 0; ki < g.kh; ++ki)
              for (int64_t kj = 0; kj < g.kw; ++kj) {
                const int64_t ih = oh * g.sh - g.pad_t + ki * g.dh, iw = ow * g.sw - g.pad_l + kj * g.dw;
                const int32_t qv = (ih < 0 || ih >= g.h || iw < 0 || iw >= g.w)
                                       ? p.zero_point
                                       : ref_q(x[static_cast<size_t>(((n * g.c + grp * cg + c) * g.h + ih) * g.w + iw)], p);
                acc += qv * lv[static_cast<size_t>(((m * cg + c) * g.kh + ki) * g.kw + kj)];
              }
          const int64_t idx = ((n * g.m + m) * g.oh + oh) * g.ow + ow;
          y[static_cast<size_t>(idx)] = ep.apply(static_cast<float>(acc - p.zero_point * rowsum) * (unit[m] * p.scale), m, idx);
        }
    }
  return y;
}

// ---- random data ----
// Channel kinds: 4-bit-like levels (0, +-1..8), full range, +128 only, both +-128, -128 only.
static void random_levels(std::mt19937& rng, int64_t rows, int64_t depth, std::vector<int16_t>* lv) {
  lv->assign(static_cast<size_t>(rows * depth), 0);
  for (int64_t r = 0; r < rows; ++r) {
    const int kind = static_cast<int>(rng() % 5);
    for (int64_t d = 0; d < depth; ++d) {
      int v;
      if (kind == 0) v = (rng() % 3 == 0) ? 0 : (rng() % 2 ? 1 : -1) * (1 << (rng() % 4));
      else v = static_cast<int>(rng() % 257) - 128;
      if (kind == 2 && v == -128) v = 0;
      if (kind == 4 && v == 128) v = 0;
      (*lv)[static_cast<size_t>(r * depth + d)] = static_cast<int16_t>(v);
    }
    const int64_t d0 = static_cast<int64_t>(rng() % depth), d1 = static_cast<int64_t>(rng() % depth);
    if (kind == 2) (*lv)[static_cast<size_t>(r * depth + d0)] = 128;
    if (kind == 3 && depth > 1 && d0 != d1) (*lv)[static_cast<size_t>(r * depth + d0)] = 128, (*lv)[static_cast<size_t>(r * depth + d1)] = -128;
    if (kind == 4) (*lv)[static_cast<size_t>(r * depth + d0)] = -128;
  }
}

static std::vector<const QKernels*> paths() {
  std::vector<const QKernels*> v;
  for (const char* n : {"generic", "avx2", "avx512vnni"})
    if (const QKernels* k = qkernels_by_name(n)) v.push_back(k);
  return v;
}

static Epilogue random_epilogue(std::mt19937& rng, const std::vector<float>& bias, const std::vector<float>& z) {
  Epilogue ep;
  const unsigned v = rng() % 12;
  if (v & 1) ep.bias = bias.data();
  if (v & 2) ep.summand = z.data();
  ep.activation = (v >> 2) == 0 ? Activation::kNone : (v >> 2) == 1 ? Activation::kRelu : Activation::kClip;
  ep.clip_min = -0.5f, ep.clip_max = 0.75f;
  return ep;
}

static QuantParams random_quant(std::mt19937& rng) {
  QuantParams q;
  const unsigned v = rng() % 3;
  if (v == 0) return q;  // dynamic
  q.scale = std::ldexp(1.0f + static_cast<float>(rng() % 1000) / 1000.0f, -6 + static_cast<int>(rng() % 4));
  q.zero_point = v == 1 ? 0 : static_cast<int32_t>(rng() % 256);
  return q;
}

static void test_conv_random(int trials) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  const auto ks = paths();
  const TaskRunner pool(parallel_for, nullptr);
  for (int t = 0; t < trials; ++t) {
    ConvGeometry g;
    const bool one_d = rng() % 4 == 0;
    g.n = 1 + rng() % 3;
    const unsigned gk = rng() % 4;  // 0,1: dense, 2: two groups, 3: depthwise
    const int64_t cg = gk == 3 ? 1 : 1 + rng() % 19;
    g.group = gk == 2 ? 2 : gk == 3 ? 1 + rng() % 9 : 1;
    g.c = cg * g.group;
    const int64_t mg = gk == 3 ? 1 : (rng() % 6 == 0 ? 60 + rng() % 80 : 1 + rng() % 21);
    g.m = mg * g.group;
    g.kw = 1 + rng() % 7, g.sw = 1 + rng() % 3, g.dw = 1 + rng() % 2;
    g.pad_l = rng() % 4, g.pad_r = rng() % 4;
    if (!one_d) g.kh = 1 + rng() % 7, g.sh = 1 + rng() % 3, g.dh = 1 + rng() % 2, g.pad_t = rng() % 4, g.pad_b = rng() % 4;
    g.h = one_d ? 1 : std::max<int64_t>(1, (g.kh - 1) * g.dh + 1 - g.pad_t - g.pad_b) + rng() % 12;
    g.w = std::max<int64_t>(1, (g.kw - 1) * g.dw + 1 - g.pad_l - g.pad_r) + rng() % 40;
    std::vector<int64_t> out, pads;
    const std::string err = conv_output_shape({g.h, g.w}, {g.kh, g.kw}, {g.sh, g.sw}, {g.dh, g.dw},
                                              {g.pad_t, g.pad_l, g.pad_b, g.pad_r}, AutoPad::kNotSet, &out, &pads);
    if (!err.empty()) continue;
    g.oh = out[0], g.ow = out[1];
    std::vector<float> x(static_cast<size_t>(g.n * g.c * g.h * g.w)), unit(static_cast<size_t>(g.m)),
        bias(static_cast<size_t>(g.m)), z(static_cast<size_t>(g.n * g.m * g.oh * g.ow));
    for (auto& v : x) v = nd(rng) * (rng() % 2 ? 1.0f : 0.3f) + 0.2f;
    for (auto& v : unit) v = std::ldexp(1.0f, -9 + static_cast<int>(rng() % 6));
    for (auto& v : bias) v = nd(rng);
    for (auto& v : z) v = nd(rng);
    std::vector<int16_t> lv;
    random_levels(rng, g.m, cg * g.kh * g.kw, &lv);
    const QuantParams q = random_quant(rng);
    const Epilogue ep = random_epilogue(rng, bias, z);
    const std::vector<float> want = ref_conv(g, lv, unit, x, q, ep);
    for (const QKernels* k : ks) {
      QConvWeights w;
      const std::string perr = w.prepare(g.m, g.group, cg, g.kh, g.kw, lv.data(), unit.data(), k);
      CHECK(perr.empty(), "prepare: %s", perr.c_str());
      for (int threaded = 0; threaded < 2; ++threaded) {
        std::vector<float> y(want.size(), -7.0f);
        qconv_forward(g, w, x.data(), q, ep, y.data(), threaded ? pool : TaskRunner());
        const bool same = std::memcmp(y.data(), want.data(), want.size() * sizeof(float)) == 0;
        CHECK(same,
              "conv %s%s trial %d: n%lld c%lld %lldx%lld m%lld g%lld k%lldx%lld s%lldx%lld d%lldx%lld pads %lld,%lld,%lld,%lld "
              "q(%g,%d) corr %lld",
              k->name, threaded ? " threaded" : "", t, (long long)g.n, (long long)g.c, (long long)g.h, (long long)g.w,
              (long long)g.m, (long long)g.group, (long long)g.kh, (long long)g.kw, (long long)g.sh, (long long)g.sw,
              (long long)g.dh, (long long)g.dw, (long long)g.pad_t, (long long)g.pad_l, (long long)g.pad_b,
              (long long)g.pad_r, q.scale, q.zero_point, (long long)w.correction_rows());
        if (!same) {
          for (size_t i = 0; i < want.size(); ++i)
            if (std::memcmp(&y[i], &want[i], 4)) {
              std::printf("  first diff at %zu: %.9g vs %.9g\n", i, y[i], want[i]);
              break;
            }
        }
      }
    }
  }
}

// Output planes whose columns are whole 48-column chunks plus one (7x7 = 49, 1x97): the lone last column is
// computed in the last chunk's pass (tile_epilogue's tail), on every ISA, serial and threaded.
static void test_lone_last_column() {
  std::mt19937 rng(61);
  std::normal_distribution<float> nd;
  const TaskRunner pool(parallel_for, nullptr);
  struct Shape { int64_t c, h, w, m, kh, kw, pad; };
  // Enough 64-row blocks that whole 48-column chunks make the column blocks (as in ResNet-18's 7x7 layers).
  for (const Shape& sh : {Shape{16, 7, 7, 256, 3, 3, 1}, Shape{20, 1, 97, 130, 1, 3, 1}, Shape{32, 7, 7, 520, 1, 1, 0}}) {
    ConvGeometry g;
    g.n = 2, g.c = sh.c, g.h = sh.h, g.w = sh.w, g.m = sh.m, g.kh = sh.kh, g.kw = sh.kw;
    g.pad_t = g.pad_b = sh.kh > 1 ? sh.pad : 0, g.pad_l = g.pad_r = sh.pad;
    g.oh = g.h, g.ow = g.w;
    std::vector<float> x(static_cast<size_t>(g.n * g.c * g.h * g.w)), unit(static_cast<size_t>(g.m)),
        bias(static_cast<size_t>(g.m)), z(static_cast<size_t>(g.n * g.m * g.oh * g.ow));
    for (auto& v : x) v = nd(rng) + 0.2f;
    for (auto& v : unit) v = std::ldexp(1.0f, -9 + static_cast<int>(rng() % 6));
    for (auto& v : bias) v = nd(rng);
    for (auto& v : z) v = nd(rng);
    std::vector<int16_t> lv(static_cast<size_t>(g.m * g.c * g.kh * g.kw));
    for (auto& v : lv) v = static_cast<int16_t>(static_cast<int>(rng() % 255) - 127);  // no corrections
    QuantParams q;
    q.scale = 0.02f, q.zero_point = 100;
    Epilogue ep;
    ep.bias = bias.data(), ep.summand = z.data(), ep.activation = Activation::kRelu;
    const std::vector<float> want = ref_conv(g, lv, unit, x, q, ep);
    for (const QKernels* k : paths()) {
      QConvWeights w;
      CHECK(w.prepare(g.m, 1, g.c, g.kh, g.kw, lv.data(), unit.data(), k).empty(), "prepare");
      for (int threaded = 0; threaded < 2; ++threaded) {
        std::vector<float> y(want.size(), -7.0f);
        qconv_forward(g, w, x.data(), q, ep, y.data(), threaded ? pool : TaskRunner());
        CHECK(std::memcmp(y.data(), want.data(), want.size() * sizeof(float)) == 0, "lone column %s%s: c%lld %lldx%lld m%lld",
              k->name, threaded ? " threaded" : "", (long long)g.c, (long long)g.h, (long long)g.w, (long long)g.m);
      }
    }
  }
}

// The direct path (depthwise, channel multipliers, tiny groups), forced and automatic, against the reference:
// strides 1-3, dilations, pads, channel counts that are not multiples of 16, static / dynamic parameters,
// every epilogue, +-128 levels, exact ties of x / scale.
static void test_direct_random(int trials) {
  std::mt19937 rng(23);
  std::normal_distribution<float> nd;
  const auto ks = paths();
  const TaskRunner pool(parallel_for, nullptr);
  int direct_runs = 0;
  for (int t = 0; t < trials; ++t) {
    ConvGeometry g;
    bool one_d = rng() % 6 == 0;
    g.n = 1 + rng() % 2;
    const unsigned kind = rng() % 6;  // 0-2: depthwise, 3: channel multiplier, 4: cg 2-3, 5: cg 2 x mg 2
    const int64_t cg = kind <= 3 ? 1 : 2 + rng() % 2;
    const int64_t mg = kind == 3 ? 2 + rng() % 3 : kind == 5 ? 2 : 1;
    g.group = 1 + rng() % 37;
    g.c = cg * g.group, g.m = mg * g.group;
    const bool big = rng() % 3 == 0;
    g.kw = 1 + rng() % (big ? 7 : 4), g.sw = 1 + rng() % 3, g.dw = 1 + rng() % 2;
    g.pad_l = rng() % 4, g.pad_r = rng() % 4;
    if (!one_d) g.kh = 1 + rng() % (big ? 7 : 4), g.sh = 1 + rng() % 3, g.dh = 1 + rng() % 2, g.pad_t = rng() % 4, g.pad_b = rng() % 4;
    if (kind <= 2 && rng() % 3 == 0) {  // MobileNet's 3x3 unit-stride shape (the row-reusing kernels)
      g.kh = g.kw = 3, g.sh = g.sw = g.dh = g.dw = 1;
      one_d = false;
    }
    g.h = one_d ? 1 : std::max<int64_t>(1, (g.kh - 1) * g.dh + 1 - g.pad_t - g.pad_b) + rng() % 30;
    g.w = std::max<int64_t>(1, (g.kw - 1) * g.dw + 1 - g.pad_l - g.pad_r) + rng() % (big ? 120 : 40);
    std::vector<int64_t> out, pads;
    const std::string err = conv_output_shape({g.h, g.w}, {g.kh, g.kw}, {g.sh, g.sw}, {g.dh, g.dw},
                                              {g.pad_t, g.pad_l, g.pad_b, g.pad_r}, AutoPad::kNotSet, &out, &pads);
    if (!err.empty()) continue;
    g.oh = out[0], g.ow = out[1];
    QuantParams q = random_quant(rng);
    const bool ties = rng() % 4 == 0;
    if (ties) q.scale = 1.0f / 16, q.zero_point = static_cast<int32_t>(rng() % 256);
    std::vector<float> x(static_cast<size_t>(g.n * g.c * g.h * g.w)), unit(static_cast<size_t>(g.m)),
        bias(static_cast<size_t>(g.m)), z(static_cast<size_t>(g.n * g.m * g.oh * g.ow));
    for (auto& v : x)
      v = ties ? static_cast<float>(static_cast<int>(rng() % 600) - 300) * 0.5f * q.scale
               : nd(rng) * (rng() % 2 ? 1.0f : 0.3f) + 0.2f;
    for (auto& v : unit) v = std::ldexp(1.0f, -9 + static_cast<int>(rng() % 6));
    for (auto& v : bias) v = nd(rng);
    for (auto& v : z) v = nd(rng);
    std::vector<int16_t> lv;
    random_levels(rng, g.m, cg * g.kh * g.kw, &lv);
    const Epilogue ep = random_epilogue(rng, bias, z);
    const std::vector<float> want = ref_conv(g, lv, unit, x, q, ep);
    for (const QKernels* k : ks)
      for (int forced = 0; forced < 2; ++forced) {
        QConvWeights w;
        const std::string perr = w.prepare(g.m, g.group, cg, g.kh, g.kw, lv.data(), unit.data(), k,
                                           forced ? QConvWeights::Path::kDirect : QConvWeights::Path::kAuto);
        CHECK(perr.empty(), "prepare: %s", perr.c_str());
        CHECK(w.direct() == (forced || cg * mg < 8), "direct path chosen %d (cg %lld mg %lld)",
              w.direct(), (long long)cg, (long long)mg);
        if (!w.direct()) continue;
        ++direct_runs;
        for (int threaded = 0; threaded < 2; ++threaded) {
          std::vector<float> y(want.size(), -7.0f);
          qconv_forward(g, w, x.data(), q, ep, y.data(), threaded ? pool : TaskRunner());
          const bool same = std::memcmp(y.data(), want.data(), want.size() * sizeof(float)) == 0;
          CHECK(same,
                "direct %s%s trial %d: n%lld c%lld %lldx%lld m%lld g%lld k%lldx%lld s%lldx%lld d%lldx%lld "
                "pads %lld,%lld,%lld,%lld q(%g,%d)",
                k->name, threaded ? " threaded" : "", t, (long long)g.n, (long long)g.c, (long long)g.h,
                (long long)g.w, (long long)g.m, (long long)g.group, (long long)g.kh, (long long)g.kw,
                (long long)g.sh, (long long)g.sw, (long long)g.dh, (long long)g.dw, (long long)g.pad_t,
                (long long)g.pad_l, (long long)g.pad_b, (long long)g.pad_r, q.scale, q.zero_point);
          if (!same) {
            for (size_t i = 0; i < want.size(); ++i)
              if (std::memcmp(&y[i], &want[i], 4)) {
                std::printf("  first diff at %zu: %.9g vs %.9g\n", i, y[i], want[i]);
                break;
              }
          }
        }
      }
  }
  CHECK(direct_runs > trials, "only %d direct runs", direct_runs);
  // Too many taps for exact float sums (11 x 7 x 7 > 514): the GEMM path even when the direct one is asked for.
  std::vector<int16_t> lv(static_cast<size_t>(2 * 11 * 49), 1);
  const std::vector<float> unit(2, 1.0f);
  QConvWeights w;
  CHECK(w.prepare(2, 1, 11, 7, 7, lv.data(), unit.data(), nullptr, QConvWeights::Path::kDirect).empty() && !w.direct(),
        "direct path with 539 taps");
}

static void test_gemm_random(int trials) {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd;
  const auto ks = paths();
  const TaskRunner pool(parallel_for, nullptr);
  for (int t = 0; t < trials; ++t) {
    const int64_t M = 1 + rng() % 40, K = 1 + rng() % 100, N = 1 + rng() % 150;
    const bool ta = rng() % 2, tb = rng() % 2;
    const float alpha = rng() % 2 ? 1.0f : 0.37f;
    std::vector<float> a(static_cast<size_t>(M * K)), unit(static_cast<size_t>(N)), bias(static_cast<size_t>(N)),
        z(static_cast<size_t>(M * N));
    for (auto& v : a) v = nd(rng);
    for (auto& v : unit) v = std::ldexp(1.0f, -9 + static_cast<int>(rng() % 6));
    for (auto& v : bias) v = nd(rng);
    for (auto& v : z) v = nd(rng);
    std::vector<int16_t> rows;  // N x K
    random_levels(rng, N, K, &rows);
    std::vector<int16_t> b(rows.size());
    for (int64_t j = 0; j < N; ++j)
      for (int64_t d = 0; d < K; ++d) b[static_cast<size_t>(tb ? j * K + d : d * N + j)] = rows[static_cast<size_t>(j * K + d)];
    const QuantParams q = random_quant(rng);
    const Epilogue ep = random_epilogue(rng, bias, z);
    const QuantParams p = ref_params(a, q);
    std::vector<float> want(static_cast<size_t>(M * N));
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        int32_t acc = 0, rs = 0;
        for (int64_t d = 0; d < K; ++d) {
          const int32_t l = rows[static_cast<size_t>(j * K + d)];
          acc += ref_q(a[static_cast<size_t>(ta ? d * M + i : i * K + d)], p) * l;
          rs += l;
        }
        want[static_cast<size_t>(i * N + j)] =
            ep.apply(static_cast<float>(acc - p.zero_point * rs) * ((unit[j] * alpha) * p.scale), j, i * N + j);
      }
    for (const QKernels* k : ks) {
      QGemmWeights w;
      const std::string perr = w.prepare(K, N, tb, b.data(), unit.data(), alpha, k);
      CHECK(perr.empty(), "prepare: %s", perr.c_str());
      for (int threaded = 0; threaded < 2; ++threaded) {
        std::vector<float> y(want.size(), -7.0f);
        qgemm_forward(w, M, ta, a.data(), q, ep, y.data(), threaded ? pool : TaskRunner());
        CHECK(std::memcmp(y.data(), want.data(), want.size() * sizeof(float)) == 0,
              "gemm %s%s trial %d: M%lld K%lld N%lld ta%d tb%d", k->name, threaded ? " threaded" : "", t,
              (long long)M, (long long)K, (long long)N, ta, tb);
      }
    }
  }
}

static void test_prepare_checks() {
  // Channel 0: +128 only (sign flip), 1: both (one correction row), 2: -128 only, 3: out of range.
  const int16_t lv[4][4] = {{128, 3, 0, -5}, {128, -128, 2, 128}, {-128, 1, 1, 1}, {0, 0, 0, 0}};
  const float unit[4] = {0.5f, 0.5f, 0.5f, 0.5f};
  QConvWeights w;
  CHECK(w.prepare(3, 1, 4, 1, 1, &lv[0][0], unit).empty(), "prepare");
  CHECK(w.correction_rows() == 1, "correction rows %lld", (long long)w.correction_rows());
  const int16_t bad[4] = {0, 129, 0, 0};
  QConvWeights w2;
  const std::string err = w2.prepare(1, 1, 4, 1, 1, bad, unit);
  CHECK(err.find("129") != std::string::npos, "out-of-range level: '%s'", err.c_str());
  QGemmWeights gw;
  CHECK(!gw.prepare(4, 1, false, bad, unit, 1.0f).empty(), "gemm out-of-range level");
  // Quantization: ties to even, saturation, NaN -> 0 (through a 1x1 conv with unit level).
  const float xs[8] = {0.5f, 1.5f, 2.5f, -0.5f, 300.0f, -300.0f, std::nanf(""), 254.5f};
  const int16_t one[1] = {1};
  const float u1[1] = {1.0f};
  for (const QKernels* k : paths()) {
    QConvWeights id;
    CHECK(id.prepare(1, 1, 1, 1, 1, one, u1, k).empty(), "prepare identity");
    ConvGeometry g;
    g.w = g.ow = 8;
    float y[8];
    QuantParams q;
    q.scale = 1.0f;
    qconv_forward(g, id, xs, q, Epilogue(), y, TaskRunner());
    const float want[8] = {0, 2, 2, 0, 255, 0, 0, 254};
    CHECK(id.direct(), "1x1 single channel conv takes the direct path");
    CHECK(std::memcmp(y, want, sizeof y) == 0, "%s quantize: %g %g %g %g %g %g %g %g", k->name, y[0], y[1], y[2], y[3],
          y[4], y[5], y[6], y[7]);
    // Stride 2 (the phase split of the direct path) and the GEMM path.
    g.sw = 2, g.ow = 4;
    qconv_forward(g, id, xs, q, Epilogue(), y, TaskRunner());
    CHECK(y[0] == 0 && y[1] == 2 && y[2] == 255 && y[3] == 0, "%s stride-2 quantize: %g %g %g %g", k->name, y[0], y[1],
          y[2], y[3]);
    QConvWeights gid;
    CHECK(gid.prepare(1, 1, 1, 1, 1, one, u1, k, QConvWeights::Path::kGemm).empty() && !gid.direct(), "gemm path");
    g.sw = 1, g.ow = 8;
    qconv_forward(g, gid, xs, q, Epilogue(), y, TaskRunner());
    CHECK(std::memcmp(y, want, sizeof y) == 0, "%s gemm quantize", k->name);
  }
}

// uint8 operands (QConvOperands): u8 input codes copied without quantizing, a u8 summand dequantized in the
// epilogue, u8 output requantized from the epilogue's float, on both paths (GEMM and direct), every ISA, serial
// and threaded, bit-exact against a scalar reference of the same arithmetic.
static void test_u8_operands(int trials) {
  std::mt19937 rng(41);
  std::normal_distribution<float> nd;
  const auto ks = paths();
  const TaskRunner pool(parallel_for, nullptr);
  for (int t = 0; t < trials; ++t) {
    ConvGeometry g;
    g.n = 1 + rng() % 2;
    const unsigned gk = rng() % 3;  // 0: dense, 1: two groups, 2: depthwise
    const int64_t cg = gk == 2 ? 1 : 1 + rng() % 13;
    g.group = gk == 1 ? 2 : gk == 2 ? 1 + rng() % 6 : 1;
    g.c = cg * g.group;
    const int64_t mg = gk == 2 ? 1 + rng() % 2 : 1 + rng() % 20;
    g.m = mg * g.group;
    g.kh = 1 + rng() % 4, g.kw = 1 + rng() % 4, g.sh = 1 + rng() % 2, g.sw = 1 + rng() % 3;
    g.dh = 1 + rng() % 2, g.dw = 1;
    g.pad_t = rng() % 3, g.pad_l = rng() % 3, g.pad_b = rng() % 3, g.pad_r = rng() % 3;
    g.h = std::max<int64_t>(1, (g.kh - 1) * g.dh + 1 - g.pad_t - g.pad_b) + rng() % 9;
    g.w = std::max<int64_t>(1, g.kw - g.pad_l - g.pad_r) + rng() % 37;
    std::vector<int64_t> out, pads;
    if (!conv_output_shape({g.h, g.w}, {g.kh, g.kw}, {g.sh, g.sw}, {g.dh, g.dw}, {g.pad_t, g.pad_l, g.pad_b, g.pad_r},
                           AutoPad::kNotSet, &out, &pads).empty())
      continue;
    g.oh = out[0], g.ow = out[1];
    const size_t nx = static_cast<size_t>(g.n * g.c * g.h * g.w), ny = static_cast<size_t>(g.n * g.m * g.oh * g.ow);
    QuantParams xq, zq, yq;
    xq.scale = std::ldexp(1.0f + static_cast<float>(rng() % 1000) / 1000.0f, -6);
    xq.zero_point = static_cast<int32_t>(rng() % 256);
    zq.scale = 0.01f + static_cast<float>(rng() % 100) / 997.0f, zq.zero_point = static_cast<int32_t>(rng() % 256);
    yq.scale = 0.005f + static_cast<float>(rng() % 100) / 1999.0f, yq.zero_point = static_cast<int32_t>(rng() % 256);
    std::vector<uint8_t> x8(nx), z8(ny);
    std::vector<float> xf(nx), zf(ny), unit(static_cast<size_t>(g.m)), bias(static_cast<size_t>(g.m));
    for (auto& v : x8) v = static_cast<uint8_t>(rng() % 256);
    for (auto& v : xf) v = nd(rng) * 0.5f;
    for (auto& v : z8) v = static_cast<uint8_t>(rng() % 256);
    for (auto& v : zf) v = nd(rng);
    for (auto& v : unit) v = std::ldexp(1.0f, -9 + static_cast<int>(rng() % 6));
    for (auto& v : bias) v = nd(rng);
    std::vector<int16_t> lv;
    random_levels(rng, g.m, cg * g.kh * g.kw, &lv);
    const bool u8x = rng() % 2, u8y = rng() % 4 != 0;
    const unsigned zk = rng() % 3;  // 0: none, 1: float, 2: u8
    std::vector<float> zdeq(ny);
    for (size_t i = 0; i < ny; ++i) zdeq[i] = static_cast<float>(static_cast<int32_t>(z8[i]) - zq.zero_point) * zq.scale;
    Epilogue ep = random_epilogue(rng, bias, zf);
    ep.summand = zk == 1 ? zf.data() : zk == 2 ? zdeq.data() : nullptr;  // the reference's summand
    // Reference: codes of the input (u8 as given, else quantized), int32 sums, the rescale, the epilogue.
    std::vector<float> v(ny);
    const int64_t cgk = cg * g.kh * g.kw;
    for (int64_t n = 0; n < g.n; ++n)
      for (int64_t m = 0; m < g.m; ++m) {
        const int64_t grp = m / mg;
        int32_t rowsum = 0;
        for (int64_t i = 0; i < cgk; ++i) rowsum += lv[static_cast<size_t>(m * cgk + i)];
        for (int64_t oh = 0; oh < g.oh; ++oh)
          for (int64_t ow = 0; ow < g.ow; ++ow) {
            int32_t acc = 0;
            for (int64_t c = 0; c < cg; ++c)
              for (int64_t ki = 0; ki < g.kh; ++ki)
                for (int64_t kj = 0; kj < g.kw; ++kj) {
                  const int64_t ih = oh * g.sh - g.pad_t + ki * g.dh, iw = ow * g.sw - g.pad_l + kj * g.dw;
                  int32_t qv = xq.zero_point;
                  if (ih >= 0 && ih < g.h && iw >= 0 && iw < g.w) {
                    const size_t xi = static_cast<size_t>(((n * g.c + grp * cg + c) * g.h + ih) * g.w + iw);
                    qv = u8x ? x8[xi] : ref_q(xf[xi], xq);
                  }
                  acc += qv * lv[static_cast<size_t>(((m * cg + c) * g.kh + ki) * g.kw + kj)];
                }
            const int64_t idx = ((n * g.m + m) * g.oh + oh) * g.ow + ow;
            v[static_cast<size_t>(idx)] =
                ep.apply(static_cast<float>(acc - xq.zero_point * rowsum) * (unit[m] * xq.scale), m, idx);
          }
      }
    std::vector<uint8_t> want8(ny);
    for (size_t i = 0; i < ny; ++i)
      want8[i] = requantize_one(v[i], inverse_scale(yq.scale), static_cast<float>(yq.zero_point));
    Epilogue run_ep = ep;
    if (zk == 2) run_ep.summand = nullptr;
    QConvOperands io;
    io.x = u8x ? nullptr : xf.data(), io.x_u8 = u8x ? x8.data() : nullptr, io.xq = xq;
    io.z_u8 = zk == 2 ? z8.data() : nullptr, io.zq = zq;
    io.yq = yq;
    for (const QKernels* k : ks)
      for (int path = 0; path < 2; ++path) {
        QConvWeights w;
        const auto forced = path ? QConvWeights::Path::kDirect : QConvWeights::Path::kGemm;
        const std::string perr = w.prepare(g.m, g.group, cg, g.kh, g.kw, lv.data(), unit.data(), k, forced);
        CHECK(perr.empty(), "prepare: %s", perr.c_str());
        for (int threaded = 0; threaded < 2; ++threaded) {
          std::vector<float> yf(ny, -7.0f);
          std::vector<uint8_t> y8(ny, 77);
          io.y = u8y ? nullptr : yf.data(), io.y_u8 = u8y ? y8.data() : nullptr;
          qconv_run(g, w, io, run_ep, threaded ? pool : TaskRunner());
          const bool same = u8y ? std::memcmp(y8.data(), want8.data(), ny) == 0
                                : std::memcmp(yf.data(), v.data(), ny * sizeof(float)) == 0;
          CHECK(same, "u8 operands %s %s%s trial %d: x %s z %u y %s n%lld c%lld %lldx%lld m%lld g%lld k%lldx%lld s%lldx%lld",
                k->name, w.direct() ? "direct" : "gemm", threaded ? " threaded" : "", t, u8x ? "u8" : "f32", zk,
                u8y ? "u8" : "f32", (long long)g.n, (long long)g.c, (long long)g.h, (long long)g.w, (long long)g.m,
                (long long)g.group, (long long)g.kh, (long long)g.kw, (long long)g.sh, (long long)g.sw);
        }
      }
  }
}

// Channels holding both +128 and -128 with few +128 (sparse corrections where the kernels have sparse_add)
// and with many (correction rows in the panels), in one layer: every row kind, odd column counts.
static void test_corrections(int trials) {
  std::mt19937 rng(31);
  std::normal_distribution<float> nd;
  const auto ks = paths();
  const TaskRunner pool(parallel_for, nullptr);
  for (int t = 0; t < trials; ++t) {
    ConvGeometry g;
    g.n = 1 + rng() % 2;
    const int64_t cg = 8 + rng() % 60;
    g.c = cg;
    g.m = 1 + rng() % 140;
    g.kh = g.kw = rng() % 2 ? 3 : 1;
    g.sh = g.sw = 1 + rng() % 2;
    g.pad_t = g.pad_l = g.pad_b = g.pad_r = g.kh / 2;
    g.h = 1 + rng() % 15, g.w = 1 + rng() % 23;
    g.oh = (g.h + 2 * g.pad_t - g.kh) / g.sh + 1, g.ow = (g.w + 2 * g.pad_l - g.kw) / g.sw + 1;
    const int64_t depth = cg * g.kh * g.kw;
    std::vector<float> x(static_cast<size_t>(g.n * g.c * g.h * g.w)), unit(static_cast<size_t>(g.m)),
        bias(static_cast<size_t>(g.m)), z(static_cast<size_t>(g.n * g.m * g.oh * g.ow));
    for (auto& v : x) v = nd(rng) + 0.3f;
    for (auto& v : unit) v = std::ldexp(1.0f, -9 + static_cast<int>(rng() % 6));
    for (auto& v : bias) v = nd(rng);
    for (auto& v : z) v = nd(rng);
    std::vector<int16_t> lv(static_cast<size_t>(g.m * depth));
    for (int64_t r = 0; r < g.m; ++r) {
      int16_t* l = lv.data() + r * depth;
      for (int64_t d = 0; d < depth; ++d) l[d] = static_cast<int16_t>(static_cast<int>(rng() % 255) - 127);
      const unsigned kind = rng() % 4;  // 0: none, 1: few +128, 2: many +128, 3: +128 only
      if (kind == 0) continue;
      if (kind != 3) l[rng() % depth] = -128;
      const int64_t np = kind == 2 ? depth / 3 : 1 + rng() % 3;
      for (int64_t i = 0; i < np; ++i) {
        const int64_t d = static_cast<int64_t>(rng() % depth);
        if (l[d] != -128) l[d] = 128;
      }
    }
    const QuantParams q = random_quant(rng);
    const Epilogue ep = random_epilogue(rng, bias, z);
    const std::vector<float> want = ref_conv(g, lv, unit, x, q, ep);
    for (const QKernels* k : ks) {
      QConvWeights w;
      const std::string perr = w.prepare(g.m, 1, cg, g.kh, g.kw, lv.data(), unit.data(), k, QConvWeights::Path::kGemm);
      CHECK(perr.empty(), "prepare: %s", perr.c_str());
      for (int threaded = 0; threaded < 2; ++threaded) {
        std::vector<float> y(want.size(), -7.0f);
        qconv_forward(g, w, x.data(), q, ep, y.data(), threaded ? pool : TaskRunner());
        CHECK(std::memcmp(y.data(), want.data(), want.size() * sizeof(float)) == 0,
              "corrections %s%s trial %d: c%lld %lldx%lld m%lld k%lld s%lld corr %lld dense %lld", k->name,
              threaded ? " threaded" : "", t, (long long)g.c, (long long)g.h, (long long)g.w, (long long)g.m,
              (long long)g.kh, (long long)g.sh, (long long)w.correction_rows(),
              (long long)w.packed().dense_correction_rows());
      }
    }
  }
}

int main(int argc, char** argv) {
  const int trials = argc > 1 ? std::atoi(argv[1]) : 300;
  std::printf("integer paths:");
  for (const QKernels* k : paths()) std::printf(" %s", k->name);
  std::printf(" (active %s)\n", active_qkernels().name);
  test_prepare_checks();
  test_conv_random(trials);
  test_lone_last_column();
  test_direct_random(trials);
  test_gemm_random(trials);
  // Again with each activation layout forced (the small random layers mostly pick the wide one; compact
  // columns are the output offsets themselves, where the kernels may fuse the epilogue into the tile).
  for (const char* layout : {"", "compact", "wide"}) {
    if (*layout) setenv("INQ_QCONV_LAYOUT", layout, 1);
    std::printf("activation layout: %s\n", *layout ? layout : "chosen per layer");
    test_u8_operands(trials);
    test_corrections(trials / 3 + 1);
  }
  unsetenv("INQ_QCONV_LAYOUT");
  if (g_failures) {
    std::printf("%d failure(s)\n", g_failures);
    return 1;
  }
  std::printf("all integer kernel tests passed\n");
  return 0;
}
