// Native checks of the code GEMV (kernels/code_gemv.h) on every ISA path this CPU has:
//   float mode against a double product of the decoded weights (1e-5 relative to sum |terms|),
//   integer mode bit-exact against a scalar model of its integer arithmetic (written here independently).
// Odd K / N, M 1..6, transB, per-tensor and per-channel exponent bases, alpha, epilogues, bits 2..8.
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kernels/code_gemv.h"
#include "kernels/packed_weights.h"
#include "native_check.h"

using namespace inq;

struct Weights {
  int bits = 0;
  int64_t k = 0, n = 0;
  bool trans = false;
  std::vector<unsigned> codes;  // logical (k, n) row-major
  std::vector<int64_t> base;    // 1 or n values
  std::vector<uint8_t> packed;  // stream of docs/ops.md
  int64_t base_of(int64_t col) const { return base.size() == 1 ? base[0] : base[col]; }
  double value(int64_t kk, int64_t col) const { return decode_code(codes[kk * n + col], bits, base_of(col)); }
  CodeWeights desc() const {
    CodeWeights w;
    w.packed = packed.data(), w.packed_bytes = static_cast<int64_t>(packed.size()), w.bits = bits;
    w.k = k, w.n = n, w.trans = trans, w.exponent_base = base;
    return w;
  }
};

// Random codes with magnitude index m in [m_lo, m_hi] (per column: a random window of `span` values inside it
// when span > 0), ~20% zeros, a few "negative zero" codes; packed LSB first in the stored (maybe transposed) order.
static Weights make_weights(std::mt19937& rng, int bits, int64_t k, int64_t n, bool trans, bool per_channel,
                            int m_lo, int m_hi, int span, int64_t base0) {
  Weights w;
  w.bits = bits, w.k = k, w.n = n, w.trans = trans;
  w.codes.assign(static_cast<size_t>(k * n), 0);
  std::uniform_int_distribution<int> pct(0, 99);
  for (int64_t j = 0; j < n; ++j) {
    int lo = m_lo, hi = m_hi;
    if (span > 0 && m_hi - m_lo + 1 > span) {
      lo = std::uniform_int_distribution<int>(m_lo, m_hi - span + 1)(rng);
      hi = lo + span - 1;
    }
    std::uniform_int_distribution<int> md(lo, hi);
    for (int64_t i = 0; i < k; ++i) {
      const int r = pct(rng);
      unsigned c = 0;
      if (r < 3) c = 1u << (bits - 1);  // sign with m = 0: decodes to 0
      else if (r >= 20) c = static_cast<unsigned>(md(rng)) | (pct(rng) < 50 ? 1u << (bits - 1) : 0u);
      w.codes[i * n + j] = c;
    }
    // Pin both extremes of the window (with both signs) so the largest levels really occur.
    if (k >= 4) {
      const unsigned sb = 1u << (bits - 1);
      w.codes[0 * n + j] = static_cast<unsigned>(hi);
      w.codes[1 * n + j] = static_cast<unsigned>(hi) | sb;
      w.codes[2 * n + j] = static_cast<unsigned>(lo) | sb;
    }
  }
  if (per_channel) {
    std::uniform_int_distribution<int> bd(-3, 3);
    for (int64_t j = 0; j < n; ++j) w.base.push_back(base0 + bd(rng));
  } else {
    w.base.push_back(base0);
  }
  w.packed.assign(static_cast<size_t>(packed_byte_count(k * n, bits)), 0);
  int64_t idx = 0;
  const int64_t outer = trans ? n : k, inner = trans ? k : n;
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t in = 0; in < inner; ++in, ++idx) {
      const unsigned c = trans ? w.codes[in * n + o] : w.codes[o * n + in];
      for (int b = 0; b < bits; ++b)
        if ((c >> b) & 1u) w.packed[(idx * bits + b) / 8] |= static_cast<uint8_t>(1u << ((idx * bits + b) % 8));
    }
  return w;
}

struct EpCase {
  Epilogue ep;
  const char* name;
};

static std::vector<EpCase> epilogues(const std::vector<float>& bias, const std::vector<float>& summand) {
  std::vector<EpCase> v(3);
  v[0].name = "none";
  v[1].ep.bias = bias.data(), v[1].ep.summand = summand.data(), v[1].ep.activation = Activation::kRelu;
  v[1].name = "bias+summand+relu";
  v[2].ep.bias = bias.data(), v[2].ep.activation = Activation::kClip, v[2].ep.clip_min = -0.5f;
  v[2].ep.clip_max = 0.75f, v[2].name = "bias+clip";
  return v;
}

static std::vector<CodeIsa> paths(bool integer_mode) {
  std::vector<CodeIsa> v;
  for (CodeIsa isa : {CodeIsa::kGeneric, CodeIsa::kAvx2, CodeIsa::kAvx512})
    if (code_isa_supported(isa, integer_mode)) v.push_back(isa);
  return v;
}

// ---- float mode ---------------------------------------------------------------------------------------------

static void float_case(std::mt19937& rng, int bits, int64_t k, int64_t n, bool trans, bool per_channel, int m_lo,
                       int m_hi, int64_t base0, int expect_layout) {
  const Weights w = make_weights(rng, bits, k, n, trans, per_channel, m_lo, m_hi, 0, base0);
  CodeGemvFloat g;
  const std::string err = g.prepare(w.desc());
  CHECK(err.empty(), "float prepare bits=%d: %s", bits, err.c_str());
  if (!err.empty()) return;
  if (k < 4) expect_layout = -1;  // too few codes to be sure the largest magnitude occurs
  CHECK(expect_layout < 0 || g.layout() == expect_layout, "bits=%d m<=%d: layout %d, want %d", bits, m_hi,
        g.layout(), expect_layout);
  std::normal_distribution<float> nd;
  const int64_t max_m = 6, lda = k + 3, ldy = n + 5;
  std::vector<float> a(static_cast<size_t>(max_m * lda)), bias(static_cast<size_t>(n)),
      summand(static_cast<size_t>(max_m * ldy));
  for (auto& v : a) v = nd(rng);
  // Typical output magnitude, so bias / summand / clip bounds matter.
  double typical = 0;
  for (int64_t i = 0; i < k; ++i) typical += std::fabs(a[i]) * std::fabs(w.value(i, 0));
  typical = typical > 0 ? typical / std::sqrt(double(k)) : 1.0;
  for (auto& v : bias) v = static_cast<float>(nd(rng) * typical);
  for (auto& v : summand) v = static_cast<float>(nd(rng) * typical);
  for (const float alpha : {1.0f, -0.75f}) {
    for (const EpCase& ec : epilogues(bias, summand)) {
      for (int64_t m = 1; m <= max_m; ++m) {
        if (m == 5 && ec.ep.activation != Activation::kRelu) continue;  // M > 4 (second row group): one variant
        // Reference: double sums; tolerance relative to sum |terms|.
        std::vector<float> want(static_cast<size_t>(m * ldy)), tol(static_cast<size_t>(m * ldy));
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = 0; j < n; ++j) {
            double s = 0, mag = 0;
            for (int64_t d = 0; d < k; ++d) {
              const double t = double(a[i * lda + d]) * w.value(d, j);
              s += t;
              mag += std::fabs(t);
            }
            want[i * ldy + j] = ec.ep.apply(static_cast<float>(alpha * s), j, i * ldy + j);
            double extra = std::fabs(bias[j]) + (ec.ep.summand ? std::fabs(summand[i * ldy + j]) : 0.0);
            tol[i * ldy + j] = static_cast<float>(1e-5 * (std::fabs(alpha) * mag + extra) + 1e-30);
          }
        for (CodeIsa isa : paths(false)) {
          for (int threaded = 0; threaded < 2; ++threaded) {
            std::vector<float> y(static_cast<size_t>(m * ldy), 12345.0f);
            const TaskRunner runner = threaded ? TaskRunner(parallel_for, nullptr) : TaskRunner();
            const std::string rerr = g.run(a.data(), lda, m, alpha, ec.ep, y.data(), ldy, runner, isa);
            CHECK(rerr.empty(), "float run: %s", rerr.c_str());
            int bad = 0;
            int64_t first = -1;
            for (int64_t i = 0; i < m; ++i) {
              for (int64_t j = 0; j < n; ++j)
                if (!(std::fabs(y[i * ldy + j] - want[i * ldy + j]) <= tol[i * ldy + j])) {
                  if (!bad++) first = i * ldy + j;
                }
              for (int64_t j = n; j < ldy; ++j) bad += y[i * ldy + j] != 12345.0f;  // padding untouched
            }
            CHECK(!bad, "float %s bits=%d k=%lld n=%lld m=%lld trans=%d per_channel=%d alpha=%g ep=%s threads=%d: "
                  "%d bad, first y[%lld] = %.9g want %.9g", code_isa_name(isa), bits, (long long)k, (long long)n,
                  (long long)m, trans, per_channel, alpha, ec.name, threaded, bad, (long long)first,
                  first >= 0 ? y[first] : 0.0, first >= 0 ? want[first] : 0.0);
          }
        }
      }
    }
  }
}

static void test_float() {
  std::mt19937 rng(7);
  const int64_t shapes[][2] = {{1, 1}, {7, 5}, {33, 70}, {130, 129}, {5, 200}, {257, 64}};
  int count = 0;
  for (int bits = 2; bits <= 8; ++bits) {
    const int full = (1 << (bits - 1)) - 1;
    const int inq = bits == 2 ? 1 : 1 << (bits - 2);
    for (const auto& s : shapes) {
      const bool trans = (count % 2) == 1, per_channel = (count % 3) != 0;
      ++count;
      // INQ's levels (m = 1 .. 2^(b-2)), base around 2^-8.
      const int lay_inq = inq <= 7 ? kCgNib : (inq <= 15 ? kCgB5 : kCgB8);
      float_case(rng, bits, s[0], s[1], trans, per_channel, 1, inq, -8 - inq / 2, lay_inq);
      // The whole magnitude range of the format, centred so the weights stay in float range.
      const int lay_full = full <= 7 ? kCgNib : (full <= 15 ? kCgB5 : kCgB8);
      float_case(rng, bits, s[0], s[1], !trans, !per_channel, 1, full, -full / 2, lay_full);
    }
  }
  // Wide code, narrow use: 8-bit codes with m <= 7 still pack as nibbles; m in 9..15 as a 32-entry table.
  float_case(rng, 8, 45, 77, false, true, 1, 7, -3, kCgNib);
  float_case(rng, 8, 45, 77, true, false, 9, 15, -12, kCgB5);
  // Large base: table centring keeps 2^(e+m-1) exact (weights ~2^100).
  float_case(rng, 6, 20, 40, false, true, 20, 31, 80, kCgB8);
  std::printf("float mode: %d shapes x paths checked\n", count + 3);
}

// ---- integer mode -------------------------------------------------------------------------------------------

static void int_case(std::mt19937& rng, int bits, int64_t k, int64_t n, bool trans, bool per_channel, int m_lo,
                     int m_hi, int span, int expect_layout) {
  const Weights w = make_weights(rng, bits, k, n, trans, per_channel, m_lo, m_hi, span, -9);
  CodeGemvInt g;
  const std::string err = g.prepare(w.desc());
  CHECK(err.empty(), "int prepare bits=%d: %s", bits, err.c_str());
  if (!err.empty()) return;
  CHECK(g.layout() == expect_layout, "bits=%d span=%d: layout %d, want %d", bits, span, g.layout(), expect_layout);
  // Levels: W / 2^unit must be integers within [-128, 128] (never a rounded weight).
  std::vector<int64_t> level(static_cast<size_t>(k * n));
  bool levels_ok = true;
  for (int64_t j = 0; j < n; ++j)
    for (int64_t i = 0; i < k; ++i) {
      const double l = std::ldexp(w.value(i, j), -g.unit_exponent(j));
      levels_ok = levels_ok && l == std::nearbyint(l) && std::fabs(l) <= 128;
      level[i * n + j] = static_cast<int64_t>(l);
    }
  CHECK(levels_ok, "int bits=%d: weights are not integer multiples of 2^unit_exponent within +-128", bits);

  std::normal_distribution<float> nd;
  const int64_t max_m = 6, lda = k + 1, ldy = n + 3;
  std::vector<float> a(static_cast<size_t>(max_m * lda)), bias(static_cast<size_t>(n)),
      summand(static_cast<size_t>(max_m * ldy));
  for (auto& v : a) v = nd(rng) + 0.3f;
  a[0] = 0.0f;
  if (k > 2) a[2] = 1.5f;
  for (auto& v : bias) v = nd(rng) * 0.01f;
  for (auto& v : summand) v = nd(rng) * 0.01f;
  const CodeQuant quants[] = {{0.0f, 0}, {0.02f, 128}, {0.013f, 3}, {0.05f, 250}};  // dynamic, then fixed
  for (const CodeQuant& q0 : quants) {
    for (const float alpha : {1.0f, 0.625f}) {
      for (const EpCase& ec : epilogues(bias, summand)) {
        for (int64_t m = 1; m <= max_m; ++m) {
          if ((m == 5 || alpha != 1.0f) && ec.ep.activation != Activation::kRelu) continue;
          // Scalar model: own quantization parameters and u8 rounding, int64 sums, the documented float steps.
          CodeQuant q = q0;
          if (!(q.scale > 0)) {
            float mn = 0, mx = 0;
            for (int64_t i = 0; i < m; ++i)
              for (int64_t d = 0; d < k; ++d) {
                mn = std::fmin(mn, a[i * lda + d]);
                mx = std::fmax(mx, a[i * lda + d]);
              }
            q.scale = mx == mn ? 1.0f : (mx - mn) / 255.0f;
            q.zero_point = static_cast<int>(std::nearbyint(std::fmin(255.0f, std::fmax(0.0f, 0.0f - mn / q.scale))));
          }
          std::vector<float> want(static_cast<size_t>(m * ldy));
          for (int64_t i = 0; i < m; ++i) {
            std::vector<int64_t> xq(static_cast<size_t>(k));
            for (int64_t d = 0; d < k; ++d) {
              const float r = std::nearbyint(a[i * lda + d] / q.scale) + static_cast<float>(q.zero_point);
              xq[d] = static_cast<int64_t>(std::fmin(255.0f, std::fmax(0.0f, r)));
            }
            for (int64_t j = 0; j < n; ++j) {
              int64_t d = 0;
              for (int64_t t = 0; t < k; ++t) d += (xq[t] - q.zero_point) * level[t * n + j];
              const double s = static_cast<double>(q.scale) * static_cast<double>(alpha);
              const float v = static_cast<float>(static_cast<double>(d) * (s * std::ldexp(1.0, g.unit_exponent(j))));
              want[i * ldy + j] = ec.ep.apply(v, j, i * ldy + j);
            }
          }
          for (CodeIsa isa : paths(true)) {
            for (int threaded = 0; threaded < 2; ++threaded) {
              std::vector<float> y(static_cast<size_t>(m * ldy), 12345.0f);
              const TaskRunner runner = threaded ? TaskRunner(parallel_for, nullptr) : TaskRunner();
              CodeQuant used;
              const std::string rerr =
                  g.run(a.data(), lda, m, q0, alpha, ec.ep, y.data(), ldy, runner, isa, &used);
              CHECK(rerr.empty(), "int run: %s", rerr.c_str());
              CHECK(used.scale == q.scale && used.zero_point == q.zero_point,
                    "quant params %g/%d, want %g/%d", used.scale, used.zero_point, q.scale, q.zero_point);
              int bad = 0;
              int64_t first = -1;
              for (int64_t i = 0; i < m; ++i) {
                for (int64_t j = 0; j < n; ++j)
                  if (std::memcmp(&y[i * ldy + j], &want[i * ldy + j], sizeof(float)) != 0 && !bad++)
                    first = i * ldy + j;
                for (int64_t j = n; j < ldy; ++j) bad += y[i * ldy + j] != 12345.0f;
              }
              CHECK(!bad, "int %s bits=%d k=%lld n=%lld m=%lld trans=%d per_channel=%d span=%d scale=%g alpha=%g "
                    "ep=%s threads=%d: %d not bit-exact, first y[%lld] = %.9g want %.9g", code_isa_name(isa), bits,
                    (long long)k, (long long)n, (long long)m, trans, per_channel, span, q0.scale, alpha, ec.name,
                    threaded, bad, (long long)first, first >= 0 ? y[first] : 0.0, first >= 0 ? want[first] : 0.0);
            }
          }
        }
      }
    }
  }
}

static void test_int() {
  std::mt19937 rng(11);
  const int64_t shapes[][2] = {{1, 1}, {7, 5}, {33, 70}, {130, 129}, {6, 200}, {257, 64}};
  int count = 0;
  for (const auto& s : shapes) {
    for (int bits = 2; bits <= 8; ++bits) {
      const bool trans = count % 2, per_channel = count % 3 != 1;
      ++count;
      const int full = (1 << (bits - 1)) - 1;
      // Columns spanning up to 7 powers of two: nibble layout (any code of <= 4 bits; INQ up to 4 bits).
      int_case(rng, bits, s[0], s[1], trans, per_channel, 1, full, 7, kCgINib);
      // Spanning 8 (INQ at 5 bits: levels up to +-128): byte layout split by sign.
      if (full >= 8 && s[0] >= 4) int_case(rng, bits, s[0], s[1], !trans, !per_channel, 1, full, 8, kCgISplit);
    }
  }
  // Refusals: a column spanning 9 powers of two, and K large enough to overflow int32.
  {
    std::mt19937 r2(3);
    const Weights w = make_weights(r2, 5, 8, 3, false, false, 1, 9, 0, 0);
    CodeGemvInt g;
    const std::string err = g.prepare(w.desc());
    CHECK(err.find("more than 8 powers of two") != std::string::npos, "span 9: '%s'", err.c_str());
    const Weights big = make_weights(r2, 5, 70000, 1, false, false, 1, 8, 0, 0);
    const std::string err2 = g.prepare(big.desc());
    CHECK(err2.find("overflow") != std::string::npos, "K overflow: '%s'", err2.c_str());
    const Weights ok = make_weights(r2, 4, 70000, 1, false, false, 1, 4, 0, 0);
    CHECK(g.prepare(ok.desc()).empty(), "K = 70000 with levels <= 8 fits int32");
  }
  std::printf("integer mode: %d shapes x paths checked\n", count);
}

static void test_errors() {
  CodeGemvFloat f;
  CodeWeights w;
  std::vector<uint8_t> p(3, 0);
  w.packed = p.data(), w.packed_bytes = 3, w.bits = 3, w.k = 2, w.n = 3, w.exponent_base = {0};
  CHECK(f.prepare(w).empty(), "valid 2x3");
  w.packed_bytes = 2;
  CHECK(f.prepare(w).find("need 3") != std::string::npos, "size error");
  w.packed_bytes = 3, w.exponent_base = {0, 1};
  CHECK(f.prepare(w).find("exponent_base has 2 values") != std::string::npos, "base count");
  w.exponent_base = {2000};
  CHECK(!f.prepare(w).empty(), "base range");
  w.exponent_base = {0}, w.bits = 9;
  CHECK(f.prepare(w).find("bits") != std::string::npos, "bits");
  // Fixed zero point outside u8 is an error; non-finite scale too.
  CodeGemvInt g;
  w.bits = 3;
  CHECK(g.prepare(w).empty(), "int valid");
  float a[2] = {1, 2}, y[3];
  CHECK(!g.run(a, 2, 1, {0.1f, 300}, 1.0f, Epilogue(), y, 3, TaskRunner()).empty(), "zero point 300");
  CHECK(!g.run(a, 2, 1, {NAN, 0}, 1.0f, Epilogue(), y, 3, TaskRunner()).empty(), "NaN scale");
  CHECK(g.run(a, 2, 1, {0.1f, 0}, 1.0f, Epilogue(), y, 3, TaskRunner()).empty() && y[0] == 0.0f, "zero weights");
  // K = 0: every output is the epilogue of 0.
  const float bias[3] = {0.5f, -1.0f, 2.0f};
  Epilogue ep;
  ep.bias = bias, ep.activation = Activation::kRelu;
  w.k = 0, w.packed_bytes = 0;
  CHECK(f.prepare(w).empty() && g.prepare(w).empty(), "K = 0 prepares");
  for (CodeIsa isa : paths(false)) {
    float z[3] = {9, 9, 9};
    CHECK(f.run(a, 0, 1, 1.0f, ep, z, 3, TaskRunner(), isa).empty() && z[0] == 0.5f && z[1] == 0.0f && z[2] == 2.0f,
          "float K = 0 (%s)", code_isa_name(isa));
  }
  for (CodeIsa isa : paths(true)) {
    float z[3] = {9, 9, 9};
    CHECK(g.run(a, 0, 1, {}, 1.0f, ep, z, 3, TaskRunner(), isa).empty() && z[0] == 0.5f && z[1] == 0.0f &&
              z[2] == 2.0f, "int K = 0 (%s)", code_isa_name(isa));
  }
}

int main() {
  std::printf("code GEMV paths here: float");
  for (CodeIsa isa : paths(false)) std::printf(" %s", code_isa_name(isa));
  std::printf("; integer");
  for (CodeIsa isa : paths(true)) std::printf(" %s", code_isa_name(isa));
  std::printf("; default float %s, integer %s\n", code_isa_name(code_float_isa()), code_isa_name(code_int_isa()));
  test_errors();
  test_float();
  test_int();
  std::printf("%d checks, %d failure(s)\n", g_checks, g_failures);
  return g_failures ? 1 : 0;
}
