// Speed check (not a test): integer qconv_forward against the float conv_forward on ResNet-18 layer shapes (and
// MobileNet-v1's depthwise ones) at batch 1, serial (thread CPU time, robust on a loaded machine) and on two
// threads (wall time). Usage: bench_qconv [min seconds per measurement] [resnet|dw|all] [name filter] [1t]
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <random>
#include <thread>
#include <vector>

#include "kernels/conv.h"
#include "kernels/qconv.h"

using namespace inq;

// One helper thread (spinning, yielding so that a loaded machine does not starve it): parallel_for splits tasks
// between it and the caller.
class SpinPool {
 public:
  SpinPool() : worker_([this] { loop(); }) {}
  ~SpinPool() {
    stop_.store(true);
    worker_.join();
  }
  static void parallel_for(void* self, void (*fn)(void*, size_t), size_t total, void* usr) {
    auto* p = static_cast<SpinPool*>(self);
    p->fn_ = fn, p->usr_ = usr, p->total_ = total;
    p->next_.store(0);
    p->done_.store(0);
    p->gen_.fetch_add(1, std::memory_order_release);
    p->work();
    while (p->done_.load(std::memory_order_acquire) != 1) std::this_thread::yield();
  }

 private:
  void work() {
    for (size_t i; (i = next_.fetch_add(1)) < total_;) fn_(usr_, i);
  }
  void loop() {
    unsigned seen = 0;
    while (!stop_.load()) {
      if (gen_.load(std::memory_order_acquire) == seen) {
        std::this_thread::yield();
        continue;
      }
      seen = gen_.load();
      work();
      done_.store(1, std::memory_order_release);
    }
  }
  void (*fn_)(void*, size_t) = nullptr;
  void* usr_ = nullptr;
  size_t total_ = 0;
  std::atomic<size_t> next_{0};
  std::atomic<int> done_{0};
  std::atomic<unsigned> gen_{0};
  std::atomic<bool> stop_{false};
  std::thread worker_;
};

// As SpinPool, but the helper sleeps on a condition variable between calls (onnxruntime's pool with spinning
// off, as bench_speed.py runs it): every parallel_for pays a wake-up.
class SleepPool {
 public:
  SleepPool() : worker_([this] { loop(); }) {}
  ~SleepPool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    worker_.join();
  }
  static void parallel_for(void* self, void (*fn)(void*, size_t), size_t total, void* usr) {
    auto* p = static_cast<SleepPool*>(self);
    p->fn_ = fn, p->usr_ = usr, p->total_ = total;
    p->next_.store(0);
    p->done_.store(0);
    {
      std::lock_guard<std::mutex> lock(p->mu_);
      ++p->gen_;
    }
    p->cv_.notify_one();
    p->work();
    while (p->done_.load(std::memory_order_acquire) != 1) std::this_thread::yield();
  }

 private:
  void work() {
    for (size_t i; (i = next_.fetch_add(1)) < total_;) fn_(usr_, i);
  }
  void loop() {
    unsigned seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || gen_ != seen; });
        if (stop_) return;
        seen = gen_;
      }
      work();
      done_.store(1, std::memory_order_release);
    }
  }
  void (*fn_)(void*, size_t) = nullptr;
  void* usr_ = nullptr;
  size_t total_ = 0;
  std::atomic<size_t> next_{0};
  std::atomic<int> done_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  unsigned gen_ = 0;
  bool stop_ = false;
  std::thread worker_;
};

static double thread_cpu_s() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// Best of many single calls: thread CPU time when `cpu` (serial runs), else wall time.
// BENCH_COLD: evict the caches before each timed call (as in a model, where other layers ran in between).
static void evict_caches() {
  static std::vector<char> junk(64 << 20);
  static char v = 0;
  for (size_t i = 0; i < junk.size(); i += 64) junk[i] = ++v;
}

template <class F>
static double time_ms(F&& f, double min_s, bool cpu) {
  static const bool cold = std::getenv("BENCH_COLD") != nullptr;
  f();
  double best = 1e30;
  const auto start = std::chrono::steady_clock::now();
  int iters = 0;
  do {
    if (cold) evict_caches();
    const double c0 = thread_cpu_s();
    const auto t0 = std::chrono::steady_clock::now();
    f();
    const double el = cpu ? thread_cpu_s() - c0
                          : std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::min(best, el * 1e3);
    ++iters;
  } while (iters < 20 || std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < min_s);
  return best;
}

int main(int argc, char** argv) {
  const double min_s = argc > 1 ? std::atof(argv[1]) : 0.5;
  const char* set = argc > 2 ? argv[2] : "resnet";
  const char* filter = argc > 3 ? argv[3] : "";
  const bool only1 = argc > 4 && std::strcmp(argv[4], "1t") == 0;
  struct Layer { const char* name; int64_t c, hw, m, k, s, p, count, group; };
  const Layer resnet[] = {
      {"conv1 7x7/2 3->64 @224", 3, 224, 64, 7, 2, 3, 1, 1},   {"3x3 64->64 @56", 64, 56, 64, 3, 1, 1, 4, 1},
      {"3x3/2 64->128 @56", 64, 56, 128, 3, 2, 1, 1, 1},       {"1x1/2 64->128 @56", 64, 56, 128, 1, 2, 0, 1, 1},
      {"3x3 128->128 @28", 128, 28, 128, 3, 1, 1, 3, 1},       {"3x3/2 128->256 @28", 128, 28, 256, 3, 2, 1, 1, 1},
      {"1x1/2 128->256 @28", 128, 28, 256, 1, 2, 0, 1, 1},     {"3x3 256->256 @14", 256, 14, 256, 3, 1, 1, 3, 1},
      {"3x3/2 256->512 @14", 256, 14, 512, 3, 2, 1, 1, 1},     {"1x1/2 256->512 @14", 256, 14, 512, 1, 2, 0, 1, 1},
      {"3x3 512->512 @7", 512, 7, 512, 3, 1, 1, 3, 1},
  };
  const Layer dw[] = {
      {"dw 32 @112", 32, 112, 32, 3, 1, 1, 1, 32},        {"dw/2 64 @112", 64, 112, 64, 3, 2, 1, 1, 64},
      {"dw 128 @56", 128, 56, 128, 3, 1, 1, 1, 128},      {"dw/2 128 @56", 128, 56, 128, 3, 2, 1, 1, 128},
      {"dw 256 @28", 256, 28, 256, 3, 1, 1, 1, 256},      {"dw/2 256 @28", 256, 28, 256, 3, 2, 1, 1, 256},
      {"dw 512 @14", 512, 14, 512, 3, 1, 1, 5, 512},      {"dw/2 512 @14", 512, 14, 512, 3, 2, 1, 1, 512},
      {"dw 1024 @7", 1024, 7, 1024, 3, 1, 1, 1, 1024},
  };
  std::vector<Layer> layers;
  if (std::strcmp(set, "dw") != 0) layers.insert(layers.end(), std::begin(resnet), std::end(resnet));
  if (std::strcmp(set, "resnet") != 0) layers.insert(layers.end(), std::begin(dw), std::end(dw));
  SpinPool spin;
  SleepPool sleep_pool;
  const bool sleeping = std::getenv("BENCH_SLEEP_POOL") != nullptr;  // 2t through SleepPool
  const TaskRunner serial, two = sleeping ? TaskRunner(&SleepPool::parallel_for, &sleep_pool)
                                          : TaskRunner(&SpinPool::parallel_for, &spin);
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  std::printf("int8 path: %s, float kernel: %s; 1t: thread CPU ms, 2t: wall ms (best of runs)\n", active_qkernels().name,
              active_kernel().name);
  std::printf("%-22s %7s | %8s %8s %6s | %8s %8s %6s | %6s\n", "layer", "GMAC", "f32 1t", "i8 1t", "x",
              "f32 2t", "i8 2t", "x", "GOP/s");
  double tot[4] = {0, 0, 0, 0};
  for (const Layer& L : layers) {
    if (*filter && !std::strstr(L.name, filter)) continue;
    ConvGeometry g;
    g.c = L.c, g.h = g.w = L.hw, g.m = L.m, g.kh = g.kw = L.k, g.sh = g.sw = L.s, g.group = L.group;
    g.pad_t = g.pad_l = g.pad_b = g.pad_r = L.p;
    g.oh = g.ow = (L.hw + 2 * L.p - L.k) / L.s + 1;
    const int64_t cg = g.c / g.group, kn = g.m * cg * g.kh * g.kw;
    std::vector<float> x(static_cast<size_t>(g.c * g.h * g.w)), wf(static_cast<size_t>(kn)), unit(static_cast<size_t>(g.m), 1.0f / 64),
        bias(static_cast<size_t>(g.m)), y(static_cast<size_t>(g.m * g.oh * g.ow));
    std::vector<int16_t> lv(static_cast<size_t>(kn));
    std::vector<uint8_t> x8(x.size()), y8(y.size());
    for (auto& v : x8) v = static_cast<uint8_t>(rng() % 256);
    for (auto& v : x) v = nd(rng);
    for (auto& v : bias) v = nd(rng);
    for (size_t i = 0; i < lv.size(); ++i) {
      const int e = static_cast<int>(rng() % 8);
      lv[i] = static_cast<int16_t>(e == 7 ? 0 : (rng() % 2 ? 1 : -1) * (1 << e));
      wf[i] = lv[i] / 64.0f;
    }
    ConvWeights cw;
    cw.prepare(active_kernel(), g.m, g.group, cg, g.kh, g.kw, wf);
    QConvWeights qw;
    qw.prepare(g.m, g.group, cg, g.kh, g.kw, lv.data(), unit.data());
    Epilogue ep;
    ep.bias = bias.data();
    ep.activation = Activation::kRelu;
    QuantParams q;
    q.scale = 0.03f, q.zero_point = 128;
    double t[4] = {0, 0, 0, 0};
    for (int th = 0; th < (only1 ? 1 : 2); ++th) {
      const TaskRunner& r = th ? two : serial;
      t[2 * th] = time_ms([&] { conv_forward(g, cw, x.data(), ep, y.data(), r); }, min_s, th == 0);
      if (std::getenv("BENCH_U8")) {  // u8 in, u8 out: the chained integer graph
        QConvOperands io;
        io.x_u8 = x8.data(), io.xq = q, io.y_u8 = y8.data(), io.yq = q;
        t[2 * th + 1] = time_ms([&] { qconv_run(g, qw, io, ep, r); }, min_s, th == 0);
      } else {
        t[2 * th + 1] = time_ms([&] { qconv_forward(g, qw, x.data(), q, ep, y.data(), r); }, min_s, th == 0);
      }
    }
    const double gmac = 1e-9 * g.m * g.oh * g.ow * cg * g.kh * g.kw;
    std::printf("%-22s %7.3f | %8.3f %8.3f %6.2f | %8.3f %8.3f %6.2f | %6.0f\n", L.name, gmac, t[0], t[1], t[0] / t[1],
                t[2], t[3], t[2] / t[3], 2 * gmac / t[1] * 1e3);
    for (int i = 0; i < 4; ++i) tot[i] += t[i] * L.count;
  }
  std::printf("%-22s %7s | %8.3f %8.3f %6.2f | %8.3f %8.3f %6.2f   (ms, layers weighted by count)\n", "total", "",
              tot[0], tot[1], tot[0] / tot[1], tot[2], tot[3], tot[2] / tot[3]);
  return 0;
}
