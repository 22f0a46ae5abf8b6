// Winograd F(2x2, 3x3) for 3x3 stride-1 float convolutions: 16 multiplications per 2x2 outputs instead of 36.
//
// Per output channel m and input channel c the 3x3 kernel g becomes U = G g G^T (4x4), once per session; per 2x2
// output tile the 4x4 input patch d becomes V = B^T d B; the tile's outputs are A^T M A with
// M[xi] = sum over c of U[xi][m][c] * V[xi][c] for each of the 16 positions xi: 16 GEMMs (M x C by C x tiles)
// on the float micro-kernels. With INQ weights of up to 6 bits U is exact (sums of at most nine powers of two
// within 2^17 of each other); the input and output transforms only add and subtract.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/epilogue.h"
#include "kernels/im2col.h"
#include "kernels/scratch.h"
#include "kernels/sgemm.h"
#include "kernels/thread_pool.h"

namespace inq {

// The 16 transformed kernels of one convolution (group 1) as GEMM A operands: U[xi] is m x c.
struct WinogradWeights {
  std::vector<PrepackedPanels> u;  // 16
};

// Whether the Winograd path takes `g`: 3x3, stride 1, no dilation, one group, an even output of at least 12x12
// (smaller planes go to the pixel-rows paths) and at least 16 input and output channels. INQ_ONNX_CONV set to
// any path name turns it off (testing and comparison).
bool winograd_suits(const ConvGeometry& g);

// dense: m x c x 3 x 3, row-major.
void winograd_prepare(const MicroKernel& uk, int64_t m, int64_t c, const float* dense, WinogradWeights* out);

// y (n, m, oh, ow) = activation(conv(x, weights) + bias + summand), as conv_forward. The work is split for
// `threads_hint` threads (0: the machine's hardware threads, at most 8).
void conv_winograd(const ConvGeometry& g, const MicroKernel& uk, const WinogradWeights& w, const ScratchPool& pool,
                   const float* x, const Epilogue& ep, float* y, const TaskRunner& runner, int64_t threads_hint = 0);

}  // namespace inq
