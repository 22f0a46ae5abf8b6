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

QIsa probe_q() {
  QIsa best = QIsa::kGeneric;
#if defined(INQ_HAVE_X86_KERNELS) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2")) best = QIsa::kAvx2;
  if (best == QIsa::kAvx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni"))
    best = QIsa::kAvx512Vnni;
#endif
  if (const char* cap = std::getenv("INQ_ONNX_QISA")) {
    QIsa limit = best;
    if (std::strcmp(cap, "generic") == 0) limit = QIsa::kGeneric;
    else if (std::strcmp(cap, "avx2") == 0) limit = QIsa::kAvx2;
    if (static_cast<int>(limit) < static_cast<int>(best)) best = limit;
  }
  return best;
}

}  // namespace

QIsa detected_qisa() {
  static const QIsa isa = probe_q();
  return isa;
}

const char* qisa_name(QIsa isa) {
  switch (isa) {
    case QIsa::kAvx512Vnni: return "avx512vnni";
    case QIsa::kAvx2: return "avx2";
    default: return "generic";
  }
}

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
