// Batch-1 speed of the code GEMV (kernels/code_gemv.h): three different 4096 x 4096 layers (as the MLP of three
// Gemm+Relu layers; weights of 3 layers do not all stay in cache unless they are small), 1 and 2 threads,
// against a plain fp32 GEMV reading 64 MB per layer. Not run by ctest:  ./bench_code_gemv [reps]
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 false positive inside AVX-512 intrinsics
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kernels/code_gemv.h"
#include "kernels/packed_weights.h"

using namespace inq;

// Persistent pool: workers spin on a generation counter, yielding so a busy machine cannot stall a whole time
// slice (benchmark only).
class SpinPool {
 public:
  explicit SpinPool(int threads) {
    for (int t = 1; t < threads; ++t) workers_.emplace_back([this] { loop(); });
  }
  ~SpinPool() {
    stop_.store(true);
    gen_.fetch_add(1);
    for (auto& w : workers_) w.join();
  }
  static void parallel_for(void* self, void (*fn)(void*, size_t), size_t total, void* usr) {
    static_cast<SpinPool*>(self)->run(fn, total, usr);
  }
  TaskRunner runner() { return workers_.empty() ? TaskRunner() : TaskRunner(&SpinPool::parallel_for, this); }

 private:
  void run(void (*fn)(void*, size_t), size_t total, void* usr) {
    fn_ = fn, usr_ = usr, total_ = total;
    next_.store(0);
    done_.store(0);
    gen_.fetch_add(1);
    work();
    while (done_.load() != workers_.size()) relax();
  }
  static void relax() {
    for (int i = 0; i < 64; ++i) _mm_pause();
    std::this_thread::yield();
  }
  void work() {
    for (size_t i; (i = next_.fetch_add(1)) < total_;) fn_(usr_, i);
  }
  void loop() {
    unsigned seen = 0;  // not gen_.load(): the first run may already have started
    for (;;) {
      while (gen_.load() == seen) relax();
      seen = gen_.load();
      if (stop_.load()) return;
      work();
      done_.fetch_add(1);
    }
  }
  std::vector<std::thread> workers_;
  std::atomic<unsigned> gen_{0};
  std::atomic<size_t> next_{0}, done_{0};
  std::atomic<bool> stop_{false};
  void (*fn_)(void*, size_t) = nullptr;
  void* usr_ = nullptr;
  size_t total_ = 0;
};

constexpr int64_t kK = 4096, kN = 4096, kLayers = 3;

// Plain fp32 GEMV baseline: W in panels of 64 columns [N/64][K][64] (64 MB), 4 zmm accumulators.
__attribute__((target("avx512f,fma"))) static void fp32_panels(const float* w, const float* a, float* y, int64_t p0,
                                                               int64_t p1) {
  for (int64_t p = p0; p < p1; ++p) {
    const float* b = w + p * kK * 64;
    __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
    for (int64_t k = 0; k < kK; ++k, b += 64) {
      const __m512 ak = _mm512_set1_ps(a[k]);
      c0 = _mm512_fmadd_ps(ak, _mm512_loadu_ps(b), c0);
      c1 = _mm512_fmadd_ps(ak, _mm512_loadu_ps(b + 16), c1);
      c2 = _mm512_fmadd_ps(ak, _mm512_loadu_ps(b + 32), c2);
      c3 = _mm512_fmadd_ps(ak, _mm512_loadu_ps(b + 48), c3);
    }
    float* o = y + p * 64;
    const __m512 z = _mm512_setzero_ps();  // Relu
    _mm512_storeu_ps(o, _mm512_max_ps(c0, z));
    _mm512_storeu_ps(o + 16, _mm512_max_ps(c1, z));
    _mm512_storeu_ps(o + 32, _mm512_max_ps(c2, z));
    _mm512_storeu_ps(o + 48, _mm512_max_ps(c3, z));
  }
}

static std::vector<uint8_t> random_codes(std::mt19937& rng, int bits, int m_hi) {
  std::vector<uint8_t> packed(static_cast<size_t>(packed_byte_count(kK * kN, bits)), 0);
  std::uniform_int_distribution<int> md(1, m_hi), pct(0, 99);
  for (int64_t i = 0; i < kK * kN; ++i) {
    unsigned c = pct(rng) < 10 ? 0u : static_cast<unsigned>(md(rng)) | (pct(rng) < 50 ? 1u << (bits - 1) : 0u);
    for (int b = 0; b < bits; ++b)
      if ((c >> b) & 1u) packed[(i * bits + b) / 8] |= static_cast<uint8_t>(1u << ((i * bits + b) % 8));
  }
  return packed;
}

// Median ms of one pass over the 3 layers (each layer's output feeds the next, as in the MLP).
static double time_ms(int reps, const std::function<void()>& pass) {
  pass();
  pass();
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    pass();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::atoi(argv[1]) : 30;
  std::printf("code GEMV bench: %d layers of %lldx%lld at M=1, median of %d; float path %s, integer path %s\n",
              (int)kLayers, (long long)kK, (long long)kN, reps, code_isa_name(code_float_isa()),
              code_isa_name(code_int_isa()));
  std::printf("onnxruntime (lead's measurement, 3 layers, 2 threads): FP32 7.8 ms, int8 QGemm 2.3 ms;\n"
              "targets: float 5-bit <= 3.9 ms (2x FP32), integer 4-bit <= 1.53 ms (1.5x int8)\n\n");
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  std::vector<float> x(kK), h1(kN), h2(kN), h3(kN);
  for (auto& v : x) v = std::fabs(nd(rng));

  struct Row {
    std::string name;
    double mb;  // weight MB read per layer
    std::function<void(const float*, float*, const TaskRunner&)> layer[kLayers];
  };
  std::vector<Row> rows;

  // fp32 baseline.
  std::vector<std::vector<float>> fw(kLayers);
  for (auto& w : fw) {
    w.resize(static_cast<size_t>(kK * kN));
    for (auto& v : w) v = nd(rng) * 0.02f;
  }
  {
    Row r;
    r.name = "fp32 GEMV (plain)";
    r.mb = kK * kN * 4 / 1e6;
    for (int l = 0; l < kLayers; ++l)
      r.layer[l] = [&, l](const float* a, float* y, const TaskRunner& tr) {
        tr.run(16, [&](size_t t) { fp32_panels(fw[l].data(), a, y, t * 4, t * 4 + 4); });
      };
    rows.push_back(std::move(r));
  }

  Epilogue relu;
  relu.activation = Activation::kRelu;
  struct Cfg {
    const char* name;
    int bits, m_hi;
    bool integer;
  };
  const Cfg cfgs[] = {{"float 5-bit INQ (byte + vpermt2ps)", 5, 8, false},
                      {"float 4-bit INQ (nibble + vpermps)", 4, 4, false},
                      {"float 8-bit (byte, exponent ops)", 8, 40, false},
                      {"int 4-bit INQ (nibble + vpdpbusd)", 4, 4, true},
                      {"int 5-bit INQ (byte, split sign)", 5, 8, true}};
  std::vector<std::unique_ptr<CodeGemvFloat>> fg;
  std::vector<std::unique_ptr<CodeGemvInt>> ig;
  for (const Cfg& c : cfgs) {
    Row r;
    r.name = c.name;
    for (int l = 0; l < kLayers; ++l) {
      const std::vector<uint8_t> packed = random_codes(rng, c.bits, c.m_hi);
      CodeWeights w;
      w.packed = packed.data(), w.packed_bytes = static_cast<int64_t>(packed.size()), w.bits = c.bits;
      w.k = kK, w.n = kN, w.exponent_base = {-12};
      std::string err;
      if (c.integer) {
        ig.push_back(std::make_unique<CodeGemvInt>());
        err = ig.back()->prepare(w);
        const CodeGemvInt* g = ig.back().get();
        r.mb = g->weight_bytes() / 1e6;
        r.layer[l] = [g, &relu](const float* a, float* y, const TaskRunner& tr) {
          g->run(a, kK, 1, CodeQuant(), 1.0f, relu, y, kN, tr);
        };
      } else {
        fg.push_back(std::make_unique<CodeGemvFloat>());
        err = fg.back()->prepare(w);
        const CodeGemvFloat* g = fg.back().get();
        r.mb = g->weight_bytes() / 1e6;
        r.layer[l] = [g, &relu](const float* a, float* y, const TaskRunner& tr) {
          g->run(a, kK, 1, 1.0f, relu, y, kN, tr);
        };
      }
      if (!err.empty()) {
        std::printf("prepare %s: %s\n", c.name, err.c_str());
        return 1;
      }
    }
    rows.push_back(std::move(r));
  }

  std::printf("%-38s %8s | %9s %9s %7s | %9s %9s %7s\n", "kernel", "MB/layer", "1T ms/3L", "1T GB/s", "", "2T ms/3L",
              "2T GB/s", "vs fp32");
  double fp32_2t = 0;
  for (const Row& r : rows) {
    double ms[2];
    for (int threads = 1; threads <= 2; ++threads) {
      SpinPool pool(threads);
      const TaskRunner tr = pool.runner();
      ms[threads - 1] = time_ms(reps, [&] {
        r.layer[0](x.data(), h1.data(), tr);
        r.layer[1](h1.data(), h2.data(), tr);
        r.layer[2](h2.data(), h3.data(), tr);
      });
    }
    if (fp32_2t == 0) fp32_2t = ms[1];
    const double bytes = r.mb * 1e6 * kLayers;
    std::printf("%-38s %8.1f | %9.3f %9.1f %7s | %9.3f %9.1f %6.2fx\n", r.name.c_str(), r.mb, ms[0],
                bytes / ms[0] / 1e6, "", ms[1], bytes / ms[1] / 1e6, fp32_2t / ms[1]);
  }
  std::printf("\n(2T ms/3L vs onnxruntime: FP32 7.8 ms -> speedup = 7.8 / ms; int8 2.3 ms -> speedup = 2.3 / ms)\n");
  return 0;
}
