// CPU feature detection for run-time dispatch of the GEMM micro-kernels.
#pragma once

namespace inq {

enum class Isa { kGeneric = 0, kAvx2 = 1, kAvx512 = 2 };

// Best ISA this CPU (and OS) supports among those compiled in. The environment variable INQ_ONNX_ISA
// (generic | avx2 | avx512) caps it, for testing the fallbacks.
Isa detected_isa();
const char* isa_name(Isa isa);

// Integer (u8 x s8) kernels: vpdpbusd on AVX-512 VNNI (with BW/VL), vpmaddwd on AVX2, or portable scalar.
// The environment variable INQ_ONNX_QISA (generic | avx2 | avx512vnni) caps the choice.
enum class QIsa { kGeneric = 0, kAvx2 = 1, kAvx512Vnni = 2 };
QIsa detected_qisa();
const char* qisa_name(QIsa isa);

}  // namespace inq
