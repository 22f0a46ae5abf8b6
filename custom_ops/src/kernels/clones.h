// Run-time ISA clones of plain loops: GCC builds one copy per ISA and picks it at load time (ifunc), so that
// simple loops vectorize on any CPU the library runs on, with no per-ISA source file.
#pragma once

#if defined(INQ_HAVE_X86_KERNELS) && defined(__GNUC__) && !defined(__clang__)
#define INQ_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
// Byte loops need AVX-512 BW as well: x86-64-v4 is AVX-512 F, BW, CD, DQ and VL.
#define INQ_BYTE_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define INQ_CLONES
#define INQ_BYTE_CLONES
#endif
