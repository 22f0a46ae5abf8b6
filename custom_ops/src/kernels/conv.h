// Float convolution over decoded weights: geometry from ONNX attributes, weight pre-packing, forward pass
// (depthwise direct path, 1x1 GEMM path, im2col GEMM path).
#pragma once

#include <mutex>
#include <string>
#include <vector>

#include "kernels/epilogue.h"
#include "kernels/im2col.h"
#include "kernels/scratch.h"
#include "kernels/sgemm.h"
#include "kernels/thread_pool.h"
#include "kernels/winograd.h"

namespace inq {

enum class AutoPad { kNotSet, kSameUpper, kSameLower, kValid };

// Upper bound of strides, dilations and pads (checked at kernel creation); with it, and a kernel and input that
// fit in memory, every derived size below fits in int64.
constexpr int64_t kMaxConvAttr = int64_t{1} << 31;

// Parses an ONNX auto_pad string; returns false if unknown.
bool parse_auto_pad(const std::string& s, AutoPad* out);

// Per spatial axis: output size and begin/end pads, ONNX Conv semantics as onnxruntime's CPU Conv computes them.
// For SAME_*, the output size is ceil(in/stride) and total = (ceil(in/stride) - 1) * stride + (k - 1) * dilation
// + 1 - in; begin = total/2 (UPPER) or (total+1)/2 (LOWER), the rest at the end. A negative total (stride larger
// than what the kernel covers) crops the input: begin = trunc((total+1)/2) (UPPER) or trunc((total+2)/2)
// (LOWER), the values onnxruntime 1.32 gives. `pads` (2*nd values, all begins then all ends) applies for
// NOTSET. Returns an empty string, or a message naming the values when an output size is not positive or a
// size overflows int64.
std::string conv_output_shape(const std::vector<int64_t>& in, const std::vector<int64_t>& kernel,
                              const std::vector<int64_t>& strides, const std::vector<int64_t>& dilations,
                              const std::vector<int64_t>& pads, AutoPad auto_pad, std::vector<int64_t>* out,
                              std::vector<int64_t>* pads_used);

// Weights of one convolution, prepared once. The GEMM layouts are packed on first use (thread-safe), so a
// session holds only the layouts its input sizes need.
class ConvWeights {
 public:
  // `dense` is the decoded weight (m, c/group, kh, kw), row-major.
  void prepare(const MicroKernel& uk, int64_t m, int64_t group, int64_t cg, int64_t kh, int64_t kw,
               std::vector<float> dense);
  bool depthwise() const { return depthwise_; }
  const std::vector<float>& dense() const { return dense_; }
  // Output channels as GEMM rows (A panels, mr wide) / as GEMM columns (B panels, nr wide), per group.
  const PrepackedPanels& row_panels(int64_t g) const;
  const PrepackedPanels& column_panels(int64_t g) const;
  // The Winograd F(2x2, 3x3) kernels (3x3, one group).
  const WinogradWeights& winograd() const;
  const MicroKernel& kernel() const { return *uk_; }
  // Scratch of the forward passes over these weights: bounded, released with them (with the session).
  const ScratchPool& pool() const { return pool_; }

 private:
  const MicroKernel* uk_ = nullptr;
  bool depthwise_ = false;  // one input and one output channel per group
  int64_t m_ = 0, group_ = 1, kg_ = 0;
  std::vector<float> dense_;
  mutable std::once_flag rows_once_, columns_once_, winograd_once_;
  mutable std::vector<PrepackedPanels> rows_, columns_;
  mutable WinogradWeights winograd_;
  ScratchPool pool_;
};

// y (n, m, oh, ow) = activation(conv(x (n, c, h, w), weights) + bias + summand), each part of `ep` optional.
void conv_forward(const ConvGeometry& geo, const ConvWeights& weights, const float* x, const Epilogue& ep, float* y,
                  const TaskRunner& runner);

}  // namespace inq
