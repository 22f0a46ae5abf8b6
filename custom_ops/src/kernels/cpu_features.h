// CPU feature detection for run-time dispatch of the GEMM micro-kernels.
#pragma once

namespace inq {

enum class Isa { kGeneric = 0, kAvx2 = 1, kAvx512 = 2 };

// Best ISA this CPU (and OS) supports among those compiled in. The environment variable INQ_ONNX_ISA
// (generic | avx2 | avx512) caps it, for testing the fallbacks.
Isa detected_isa();
const char* isa_name(Isa isa);

}  // namespace inq
