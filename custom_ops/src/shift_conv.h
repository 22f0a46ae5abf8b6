// com.inq ShiftConv: ONNX Conv over bit-packed power-of-two weights (docs/ops.md).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "kernels/conv.h"
#include "kernels/max_pool.h"
#include "kernels/qconv.h"
#include "ort_util.h"

namespace inq {

class ShiftConv {
 public:
  static constexpr const char* kName = "ShiftConv";
  static OpSpec spec();
  // Every registered variant (same name and domain): X float / uint8, Z float / uint8, and Y float (input 4
  // absent, or declared float) / uint8 (input 4 Y_zero_point uint8). onnxruntime picks the first variant whose
  // input types match, so the output type follows Y_zero_point's type, as QuantizeLinear's does.
  static std::vector<OpSpec> specs();

  explicit ShiftConv(const OrtApi* api) : api_(api) {}
  // Reads and checks the attributes; decodes and pre-packs the weights if W_packed is an initializer.
  Status init(const OrtKernelInfo* info);
  Status compute(OrtKernelContext* ctx) const;
  const OrtApi* api() const { return api_; }

 private:
  Status read_pool(const OrtKernelInfo* info, size_t spatial_axes);
  Status decode(const TensorRef& packed, ConvWeights* out) const;
  Status decode_integer(const TensorRef& packed, QConvWeights* out) const;
  std::string prefix() const;

  const OrtApi* api_;
  PackedWeightAttrs weight_;  // shape (M, C/group, k1[, k2])
  std::vector<int64_t> strides_, dilations_, pads_;  // per spatial axis; pads: begins then ends
  AutoPad auto_pad_ = AutoPad::kNotSet;
  int64_t group_ = 1;
  Epilogue fused_;  // the fused activation (bias and summand are set per run)
  bool integer_ = false;  // integer mode: uint8 input, integer levels, int32 accumulation
  QuantParams x_quant_;   // static input quantization, or dynamic (scale 0)
  float y_scale_ = 0.0f;  // uint8 output scale (attribute y_scale), 0 if absent
  QuantParams z_quant_;   // uint8 summand parameters (z_scale, z_zero_point); scale 0 if absent
  // A MaxPool fused after the activation (pool_kernel_shape given): its kernel, strides and pads; the sizes
  // are filled per run.
  bool pooled_ = false;
  PoolGeometry pool_;
  // Set when W_packed is a constant initializer: float weights in float mode, integer ones in integer mode.
  std::unique_ptr<ConvWeights> constant_weights_;
  std::unique_ptr<QConvWeights> constant_qweights_;
};

}  // namespace inq
