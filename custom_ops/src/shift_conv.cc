// ShiftConv kernel: attribute checks at creation, shape checks and dispatch to kernels/conv at compute.
#include "shift_conv.h"

#include <cmath>
#include <optional>

#include "kernels/packed_weights.h"
#include "kernels/scratch.h"

namespace inq {

OpSpec ShiftConv::spec() { return specs().front(); }

std::vector<OpSpec> ShiftConv::specs() {
  const ONNXTensorElementDataType f = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, u8 = ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
  std::vector<OpSpec> out;
  for (ONNXTensorElementDataType y : {f, u8})  // float outputs first: chosen when Y_zero_point is absent
    for (ONNXTensorElementDataType x : {f, u8})
      for (ONNXTensorElementDataType z : {f, u8}) {
        OpSpec s = kernel_op_spec<ShiftConv>({x, u8, f, z, y}, {false, false, true, true, true});
        s.output = y;
        out.push_back(std::move(s));
      }
  return out;
}

std::string ShiftConv::prefix() const { return "ShiftConv (weight_shape " + shape_str(weight_.shape) + "): "; }

Status ShiftConv::init(const OrtKernelInfo* info) {
  INQ_RETURN_IF_ERROR(read_packed_shape(api_, info, kName, {3, 4}, &weight_));  // 1-D or 2-D convolution
  const size_t nd = weight_.shape.size() - 2;
  const int64_t m = weight_.shape[0];
  weight_.channel_axis = 0;
  INQ_RETURN_IF_ERROR(read_exponent_base(api_, info, prefix(), m, "M", &weight_));
  bool present = false;

  INQ_RETURN_IF_ERROR(with_prefix(prefix(), attr_int(api_, info, "group", &group_, &present)));
  if (!present) group_ = 1;
  if (group_ < 1 || m % group_ != 0)
    return Status::Invalid(prefix() + "group " + std::to_string(group_) + " must be positive and divide M = " +
                           std::to_string(m));

  std::vector<int64_t> kernel_shape;
  INQ_RETURN_IF_ERROR(with_prefix(prefix(), attr_ints(api_, info, "kernel_shape", &kernel_shape, &present)));
  const std::vector<int64_t> wk(weight_.shape.begin() + 2, weight_.shape.end());
  if (present && kernel_shape != wk)
    return Status::Invalid(prefix() + "kernel_shape " + shape_str(kernel_shape) + " does not match weight_shape");

  // Values beyond kMaxConvAttr are rejected so that every size derived from them fits in int64.
  auto spatial_attr = [&](const char* name, std::vector<int64_t>* v, size_t len, int64_t dflt, int64_t min,
                          bool* here) -> Status {
    INQ_RETURN_IF_ERROR(with_prefix(prefix(), attr_ints(api_, info, name, v, here)));
    if (!*here || v->empty()) v->assign(len, dflt);
    if (v->size() != len)
      return Status::Invalid(prefix() + name + " " + shape_str(*v) + " must have " + std::to_string(len) +
                             " values");
    for (int64_t x : *v)
      if (x < min || x > kMaxConvAttr)
        return Status::Invalid(prefix() + name + " " + shape_str(*v) + " has a value outside [" +
                               std::to_string(min) + ", " + std::to_string(kMaxConvAttr) + "]");
    return Status();
  };
  bool strides_given = false, dilations_given = false, pads_given = false;
  INQ_RETURN_IF_ERROR(spatial_attr("strides", &strides_, nd, 1, 1, &strides_given));
  INQ_RETURN_IF_ERROR(spatial_attr("dilations", &dilations_, nd, 1, 1, &dilations_given));
  INQ_RETURN_IF_ERROR(spatial_attr("pads", &pads_, 2 * nd, 0, 0, &pads_given));

  std::string auto_pad;
  INQ_RETURN_IF_ERROR(with_prefix(prefix(), attr_string(api_, info, "auto_pad", &auto_pad, &present)));
  if (!parse_auto_pad(auto_pad, &auto_pad_))
    return Status::Invalid(prefix() + "unknown auto_pad '" + auto_pad + "'");
  // As onnxruntime's Conv (1.19 and 1.32): explicit pads only with auto_pad NOTSET; SAME_* only without dilation.
  if (auto_pad_ != AutoPad::kNotSet && pads_given)
    return Status::Invalid(prefix() + "auto_pad " + auto_pad + " and pads " + shape_str(pads_) +
                           " are both set; ONNX Conv allows pads only with auto_pad NOTSET");
  if (auto_pad_ == AutoPad::kSameUpper || auto_pad_ == AutoPad::kSameLower)
    for (int64_t d : dilations_)
      if (d != 1)
        return Status::Invalid(prefix() + "auto_pad " + auto_pad + " with dilations " + shape_str(dilations_) +
                               " is not supported (onnxruntime's Conv rejects it too)");

  INQ_RETURN_IF_ERROR(read_activation(api_, info, prefix(), &fused_));
  INQ_RETURN_IF_ERROR(read_integer_mode(api_, info, prefix(), &integer_, &x_quant_));
  // uint8 tensors between integer layers: y_scale (output), z_scale / z_zero_point (summand).
  bool y_scale_present = false, z_scale_present = false, z_zp_present = false;
  float z_scale = 0.0f;
  int64_t z_zp = 0;
  INQ_RETURN_IF_ERROR(with_prefix(prefix(), attr_float(api_, info, "y_scale", &y_scale_, &y_scale_present)));
  INQ_RETURN_IF_ERROR(with_prefix(prefix(), attr_float(api_, info, "z_scale", &z_scale, &z_scale_present)));
  INQ_RETURN_IF_ERROR(with_prefix(prefix(), attr_int(api_, info, "z_zero_point", &z_zp, &z_zp_present)));
  if (!y_scale_present) y_scale_ = 0.0f;
  if ((y_scale_present || z_scale_present || z_zp_present) && !integer_)
    return Status::Invalid(prefix() + "y_scale / z_scale / z_zero_point need integer mode (quantize_input uint8)");
  if (y_scale_present && !(y_scale_ > 0.0f && std::isfinite(y_scale_)))
    return Status::Invalid(prefix() + "y_scale " + std::to_string(y_scale_) + " must be positive and finite");
  if (z_scale_present && !(z_scale > 0.0f && std::isfinite(z_scale)))
    return Status::Invalid(prefix() + "z_scale " + std::to_string(z_scale) + " must be positive and finite");
  if (z_zp_present && !z_scale_present) return Status::Invalid(prefix() + "z_zero_point needs z_scale");
  if (z_zp < 0 || z_zp > 255)
    return Status::Invalid(prefix() + "z_zero_point " + std::to_string(z_zp) + " is outside 0..255");
  z_quant_.scale = z_scale_present ? z_scale : 0.0f;
  z_quant_.zero_point = static_cast<int32_t>(z_zp);

  INQ_RETURN_IF_ERROR(read_pool(info, nd));

  TensorRef packed;
  INQ_RETURN_IF_ERROR(constant_input(api_, info, 1, &packed));
  if (packed.present && integer_) {
    auto w = std::make_unique<QConvWeights>();
    INQ_RETURN_IF_ERROR(decode_integer(packed, w.get()));
    constant_qweights_ = std::move(w);
  } else if (packed.present) {
    auto w = std::make_unique<ConvWeights>();
    INQ_RETURN_IF_ERROR(decode(packed, w.get()));
    constant_weights_ = std::move(w);
  }
  return Status();
}

// The fused MaxPool: pool_kernel_shape (2 values) turns it on; pool_strides and pool_pads as MaxPool's strides
// and pads (ceil_mode 0, no dilation: the fusion rule only fuses those).
Status ShiftConv::read_pool(const OrtKernelInfo* info, size_t spatial_axes) {
  std::vector<int64_t> kernel, strides, pads;
  bool has_kernel = false, has_strides = false, has_pads = false;
  INQ_RETURN_IF_ERROR(with_prefix(prefix(), attr_ints(api_, info, "pool_kernel_shape", &kernel, &has_kernel)));
  INQ_RETURN_IF_ERROR(with_prefix(prefix(), attr_ints(api_, info, "pool_strides", &strides, &has_strides)));
  INQ_RETURN_IF_ERROR(with_prefix(prefix(), attr_ints(api_, info, "pool_pads", &pads, &has_pads)));
  if (!has_kernel) {
    if (has_strides || has_pads)
      return Status::Invalid(prefix() + "pool_strides / pool_pads need pool_kernel_shape");
    return Status();
  }
  if (spatial_axes != 2 || kernel.size() != 2)
    return Status::Invalid(prefix() + "pool_kernel_shape " + shape_str(kernel) +
                           " must have 2 values, on a 2-D convolution");
  if (!has_strides) strides.assign(2, 1);
  if (!has_pads) pads.assign(4, 0);
  if (strides.size() != 2 || pads.size() != 4)
    return Status::Invalid(prefix() + "pool_strides " + shape_str(strides) + " / pool_pads " + shape_str(pads) +
                           " must have 2 / 4 values");
  const std::string range = " has a value outside [1, " + std::to_string(kMaxConvAttr) + "]";
  for (int64_t v : kernel)
    if (v < 1 || v > kMaxConvAttr) return Status::Invalid(prefix() + "pool_kernel_shape " + shape_str(kernel) + range);
  for (int64_t v : strides)
    if (v < 1 || v > kMaxConvAttr) return Status::Invalid(prefix() + "pool_strides " + shape_str(strides) + range);
  pooled_ = true;
  pool_.kh = kernel[0], pool_.kw = kernel[1], pool_.sh = strides[0], pool_.sw = strides[1];
  pool_.pad_t = pads[0], pool_.pad_l = pads[1], pool_.pad_b = pads[2], pool_.pad_r = pads[3];
  for (size_t i = 0; i < 4; ++i)
    if (pads[i] < 0 || pads[i] >= kernel[i % 2])
      return Status::Invalid(prefix() + "pool_pads " + shape_str(pads) + " must be in [0, pool kernel)");
  return Status();
}

Status ShiftConv::decode_integer(const TensorRef& packed, QConvWeights* out) const {
  INQ_RETURN_IF_ERROR(check_packed_input(packed, weight_, prefix(), "W_packed"));
  const std::string where = prefix() + "W_packed";
  TemporaryArray<int16_t> levels(static_cast<size_t>(element_count(weight_.shape)));
  std::vector<float> unit;
  std::string err = decode_levels(static_cast<const uint8_t*>(packed.data), packed.count, weight_.bits,
                                  weight_.shape, weight_.exponent_base, weight_.channel_axis, levels.data(), &unit);
  if (!err.empty()) return Status::Invalid(where + ": " + err);
  const int64_t m = weight_.shape[0];
  if (unit.size() == 1) unit.assign(static_cast<size_t>(m), unit[0]);
  const int64_t kh = weight_.shape.size() == 4 ? weight_.shape[2] : 1;
  err = out->prepare(m, group_, weight_.shape[1], kh, weight_.shape.back(), levels.data(), unit.data());
  if (!err.empty()) return Status::Invalid(where + ": " + err);
  return Status();
}

Status ShiftConv::decode(const TensorRef& packed, ConvWeights* out) const {
  std::vector<float> dense;
  INQ_RETURN_IF_ERROR(decode_packed(packed, weight_, prefix(), "W_packed", &dense));
  const int64_t kh = weight_.shape.size() == 4 ? weight_.shape[2] : 1;
  const int64_t kw = weight_.shape.back();
  out->prepare(active_kernel(), weight_.shape[0], group_, weight_.shape[1], kh, kw, std::move(dense));
  return Status();
}

Status ShiftConv::compute(OrtKernelContext* ctx) const {
  TensorRef x, b, z, yzp;
  INQ_RETURN_IF_ERROR(input(api_, ctx, 0, &x));
  INQ_RETURN_IF_ERROR(input(api_, ctx, 2, &b));
  INQ_RETURN_IF_ERROR(input(api_, ctx, 3, &z));
  INQ_RETURN_IF_ERROR(input(api_, ctx, 4, &yzp));
  const auto u8 = ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
  const bool x_u8 = x.present && x.type == u8, z_u8 = z.present && z.type == u8;
  if (!integer_ && (x_u8 || z_u8 || yzp.present))
    return Status::Invalid(prefix() + "uint8 X / Z and Y_zero_point need integer mode (quantize_input uint8)");
  if (x_u8 && x_quant_.dynamic())
    return Status::Invalid(prefix() + "X is uint8: x_scale (and x_zero_point) must describe it");
  if (z_u8 && z_quant_.dynamic())
    return Status::Invalid(prefix() + "Z is uint8: z_scale (and z_zero_point) must describe it");
  if (z.present && !z_u8 && !z_quant_.dynamic())
    return Status::Invalid(prefix() + "z_scale is set but Z is float (z_scale describes a uint8 Z)");
  QuantParams yq;
  if (yzp.present) {
    if (yzp.type != u8 || yzp.count != 1 || yzp.shape.size() > 1)
      return Status::Invalid(prefix() + "Y_zero_point must be one uint8 value (shape [] or [1]), got shape " +
                             shape_str(yzp.shape) + (yzp.type != u8 ? " of another element type" : ""));
    if (!(y_scale_ > 0.0f))
      return Status::Invalid(prefix() + "Y_zero_point (uint8 output) needs the y_scale attribute");
    yq.scale = y_scale_;
    yq.zero_point = *static_cast<const uint8_t*>(yzp.data);
  } else if (y_scale_ > 0.0f) {
    return Status::Invalid(prefix() + "y_scale is set without the Y_zero_point input that makes Y uint8");
  }
  const size_t rank = weight_.shape.size();
  if (!x.present || x.shape.size() != rank)
    return Status::Invalid(prefix() + "X must have rank " + std::to_string(rank) + " (N, C, spatial...), got shape " +
                           shape_str(x.shape));
  const int64_t m = weight_.shape[0];
  if (x.shape[1] != group_ * weight_.shape[1])
    return Status::Invalid(prefix() + "X has shape " + shape_str(x.shape) + " with " + std::to_string(x.shape[1]) +
                           " channels; group " + std::to_string(group_) + " x weight_shape[1] " +
                           std::to_string(weight_.shape[1]) + " = " + std::to_string(group_ * weight_.shape[1]) +
                           " expected");
  if (b.present && (b.shape.size() != 1 || b.shape[0] != m))
    return Status::Invalid(prefix() + "B must have shape [" + std::to_string(m) + "], got " + shape_str(b.shape));

  const std::vector<int64_t> in(x.shape.begin() + 2, x.shape.end());
  const std::vector<int64_t> kernel(weight_.shape.begin() + 2, weight_.shape.end());
  std::vector<int64_t> out_sp, pads;
  const std::string err = conv_output_shape(in, kernel, strides_, dilations_, pads_, auto_pad_, &out_sp, &pads);
  if (!err.empty()) return Status::Invalid(prefix() + "X shape " + shape_str(x.shape) + ": " + err);

  ConvGeometry g;
  g.n = x.shape[0];
  g.c = x.shape[1];
  g.m = m;
  g.group = group_;
  if (rank == 4) {
    g.h = in[0], g.w = in[1], g.kh = kernel[0], g.kw = kernel[1];
    g.sh = strides_[0], g.sw = strides_[1], g.dh = dilations_[0], g.dw = dilations_[1];
    g.pad_t = pads[0], g.pad_l = pads[1], g.pad_b = pads[2], g.pad_r = pads[3];
    g.oh = out_sp[0], g.ow = out_sp[1];
  } else {
    g.w = in[0], g.kw = kernel[0], g.sw = strides_[0], g.dw = dilations_[0];
    g.pad_l = pads[0], g.pad_r = pads[1], g.ow = out_sp[0];
  }

  std::vector<int64_t> conv_shape = {g.n, m};
  conv_shape.insert(conv_shape.end(), out_sp.begin(), out_sp.end());
  if (z.present && z.shape != conv_shape)
    return Status::Invalid(prefix() + "Z must have the convolution's output shape " + shape_str(conv_shape) +
                           ", got " + shape_str(z.shape));
  std::vector<int64_t> y_shape = conv_shape;
  PoolGeometry pg = pool_;
  if (pooled_) {
    pg.planes = g.n * m, pg.h = g.oh, pg.w = g.ow;
    const std::string pool_err = pool_output_size(&pg);
    if (!pool_err.empty())
      return Status::Invalid(prefix() + "convolution output " + shape_str(conv_shape) + ": " + pool_err);
    y_shape = {g.n, m, pg.oh, pg.ow};
  }
  ConvWeights runtime_weights;
  QConvWeights runtime_qweights;
  const ConvWeights* w = constant_weights_.get();
  const QConvWeights* qw = constant_qweights_.get();
  if (!w && !qw) {
    TensorRef packed;
    INQ_RETURN_IF_ERROR(input(api_, ctx, 1, &packed));
    if (integer_) {
      INQ_RETURN_IF_ERROR(decode_integer(packed, &runtime_qweights));
      qw = &runtime_qweights;
    } else {
      INQ_RETURN_IF_ERROR(decode(packed, &runtime_weights));
      w = &runtime_weights;
    }
  }
  TensorRef y;
  INQ_RETURN_IF_ERROR(output(api_, ctx, 0, y_shape, &y));
  if ((y.type == u8) != yzp.present)
    return Status::Invalid(prefix() + "output Y is " + (y.type == u8 ? "uint8" : "not uint8") +
                           " but Y_zero_point is " + (yzp.present ? "given" : "absent"));
  if (y.count == 0) return Status();
  Epilogue ep = fused_;
  ep.bias = b.present ? static_cast<const float*>(b.data) : nullptr;
  ep.summand = z.present && !z_u8 ? static_cast<const float*>(z.data) : nullptr;
  OrtTaskRunner pool(api_, ctx);
  // With a fused MaxPool, the convolution writes its whole output to scratch and the pool reads it from there.
  std::optional<ScratchPool::Lease> conv_out;
  if (pooled_) {
    const size_t elem = yzp.present ? 1 : sizeof(float);
    conv_out.emplace((qw ? qw->pool() : w->pool()).acquire(static_cast<size_t>(element_count(conv_shape)) * elem));
  }
  void* conv_y = conv_out ? conv_out->as<void>() : y.data;
  if (qw) {
    QConvOperands io;
    io.x = x_u8 ? nullptr : static_cast<const float*>(x.data);
    io.x_u8 = x_u8 ? static_cast<const uint8_t*>(x.data) : nullptr;
    io.xq = x_quant_;
    io.z_u8 = z_u8 ? static_cast<const uint8_t*>(z.data) : nullptr;
    io.zq = z_quant_;
    io.y = yzp.present ? nullptr : static_cast<float*>(conv_y);
    io.y_u8 = yzp.present ? static_cast<uint8_t*>(conv_y) : nullptr;
    io.yq = yq;
    qconv_run(g, *qw, io, ep, pool.runner);
  } else {
    conv_forward(g, *w, static_cast<const float*>(x.data), ep, static_cast<float*>(conv_y), pool.runner);
  }
  if (pooled_ && yzp.present)
    max_pool(pg, static_cast<const uint8_t*>(conv_y), static_cast<uint8_t*>(y.data), pool.runner);
  else if (pooled_)
    max_pool(pg, static_cast<const float*>(conv_y), static_cast<float*>(y.data), pool.runner);
  return Status();
}

}  // namespace inq
