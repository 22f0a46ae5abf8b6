// Dynamic quantization parameters and the integer kernel table dispatch.
#include "kernels/quantize.h"

#include <cstring>

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
