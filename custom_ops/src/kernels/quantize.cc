// Dynamic quantization parameters and the integer kernel table dispatch.
#include "kernels/quantize.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu_features.h"

namespace inq {

QuantParams dynamic_params(float lo, float hi) {
  lo = lo < 0.0f ? lo : 0.0f;
  hi = hi > 0.0f ? hi : 0.0f;
  QuantParams p;
  p.scale = hi == lo ? 1.0f : (hi - lo) / 255.0f;
  float z = 0.0f - lo / p.scale;
  z = z > 0.0f ? z : 0.0f;
  z = z < 255.0f ? z : 255.0f;
  p.zero_point = static_cast<int32_t>(std::nearbyint(z));
  return p;
}

QuantParams dynamic_params(const QKernels& k, const float* x, int64_t n) {
  float lo = 0.0f, hi = 0.0f;
  k.minmax(x, n, &lo, &hi);
  return dynamic_params(lo, hi);
}

QuantParams dynamic_params(const QKernels& k, const float* x, int64_t n, const TaskRunner& runner) {
  constexpr int64_t kChunk = 32768;  // floats per task: well above the cost of a task
  const int64_t chunks = std::min<int64_t>((n + kChunk - 1) / kChunk, 16);
  if (chunks <= 1) return dynamic_params(k, x, n);
  const int64_t per = (n + chunks - 1) / chunks;
  std::vector<float> lo(static_cast<size_t>(chunks), 0.0f), hi(static_cast<size_t>(chunks), 0.0f);
  runner.run(static_cast<size_t>(chunks), [&](size_t t) {
    const int64_t b = static_cast<int64_t>(t) * per, e = std::min(n, b + per);
    if (b < e) k.minmax(x + b, e - b, &lo[t], &hi[t]);
  });
  float l = 0.0f, h = 0.0f;
  for (int64_t t = 0; t < chunks; ++t) {
    l = lo[static_cast<size_t>(t)] < l ? lo[static_cast<size_t>(t)] : l;
    h = hi[static_cast<size_t>(t)] > h ? hi[static_cast<size_t>(t)] : h;
  }
  return dynamic_params(l, h);
}

const QKernels* qkernels_by_name(const char* name) {
  if (std::strcmp(name, "generic") == 0) return &generic_qkernels();
#if defined(INQ_HAVE_X86_KERNELS)
  __builtin_cpu_init();
  if (std::strcmp(name, "avx2") == 0 && __builtin_cpu_supports("avx2")) return &avx2_qkernels();
  if (std::strcmp(name, "avx512vnni") == 0 && __builtin_cpu_supports("avx512f") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512vnni"))
    return &avx512vnni_qkernels();
#endif
  return nullptr;
}

const QKernels& active_qkernels() {
  static const QKernels* k = qkernels_by_name(qisa_name(detected_qisa()));
  return *k;
}

}  // namespace inq
