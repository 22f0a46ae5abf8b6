// 2-D max pooling of NCHW planes (float or uint8 codes): the MaxPool that ShiftConv runs fused after its
// epilogue. uint8 codes pool exactly like the floats they stand for (quantization is monotone).
#pragma once

#include <cstdint>
#include <string>

#include "kernels/thread_pool.h"

namespace inq {

struct PoolGeometry {
  int64_t planes = 0;  // N * C
  int64_t h = 0, w = 0;
  int64_t kh = 1, kw = 1, sh = 1, sw = 1;
  int64_t pad_t = 0, pad_l = 0, pad_b = 0, pad_r = 0;
  int64_t oh = 0, ow = 0;
};

// Fills the output size of `p` (floor mode, as MaxPool with ceil_mode 0) or returns why it is invalid: every
// window must overlap the input (pads smaller than the kernel, as ONNX requires) and the output be non-empty.
std::string pool_output_size(PoolGeometry* p);

// y[plane][oh][ow] = max over the window's input pixels (padding ignored), planes split over the runner.
void max_pool(const PoolGeometry& p, const float* x, float* y, const TaskRunner& runner);
void max_pool(const PoolGeometry& p, const uint8_t* x, uint8_t* y, const TaskRunner& runner);

}  // namespace inq
