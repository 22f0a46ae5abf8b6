// Run-time ISA detection (x86: __builtin_cpu_supports, which also checks OS support of the register state).
#include "kernels/cpu_features.h"

#include <cstdlib>
#include <cstring>

namespace inq {
namespace {

Isa probe() {
  Isa best = Isa::kGeneric;
#if defined(INQ_HAVE_X86_KERNELS) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = Isa::kAvx2;
  if (best == Isa::kAvx2 && __builtin_cpu_supports("avx512f")) best = Isa::kAvx512;
#endif
  if (const char* cap = std::getenv("INQ_ONNX_ISA")) {
    Isa limit = best;
    if (std::strcmp(cap, "generic") == 0) limit = Isa::kGeneric;
    else if (std::strcmp(cap, "avx2") == 0) limit = Isa::kAvx2;
    if (static_cast<int>(limit) < static_cast<int>(best)) best = limit;
  }
  return best;
}

}  // namespace

Isa detected_isa() {
  static const Isa isa = probe();
  return isa;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "generic";
  }
}

}  // namespace inq
