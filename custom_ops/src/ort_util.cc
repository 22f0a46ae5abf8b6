// onnxruntime C API helpers (see ort_util.h).
#include "ort_util.h"

#include <algorithm>
#include <cmath>
#include <climits>
#include <cstring>

#include "kernels/packed_weights.h"

namespace inq {

uint32_t g_api_version = 0;

Status from_ort(const OrtApi* api, OrtStatus* status) {
  if (!status) return Status();
  Status s(api->GetErrorCode(status), api->GetErrorMessage(status));
  api->ReleaseStatus(status);
  return s;
}

OrtStatus* to_ort(const OrtApi* api, const Status& status) {
  if (status.ok()) return nullptr;
  return api->CreateStatus(status.code(), status.message().c_str());
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

namespace {

enum class AttrType { kInt, kFloat, kString, kInts, kFloats };

const char* type_name(AttrType t) {
  switch (t) {
    case AttrType::kInt: return "int";
    case AttrType::kFloat: return "float";
    case AttrType::kString: return "string";
    case AttrType::kInts: return "ints";
    case AttrType::kFloats: return "floats";
  }
  return "?";
}

// True if attribute `name` can be read as type `t`.
bool readable_as(const OrtApi* api, const OrtKernelInfo* info, const char* name, AttrType t) {
  int64_t i = 0;
  float f = 0;
  size_t size = 0;
  OrtStatus* s = nullptr;
  switch (t) {
    case AttrType::kInt: s = api->KernelInfoGetAttribute_int64(info, name, &i); break;
    case AttrType::kFloat: s = api->KernelInfoGetAttribute_float(info, name, &f); break;
    case AttrType::kString: s = api->KernelInfoGetAttribute_string(info, name, nullptr, &size); break;
    case AttrType::kInts: s = api->KernelInfoGetAttributeArray_int64(info, name, nullptr, &size); break;
    case AttrType::kFloats: s = api->KernelInfoGetAttributeArray_float(info, name, nullptr, &size); break;
  }
  if (s) {
    api->ReleaseStatus(s);
    return false;
  }
  // onnxruntime reads any attribute as a list, empty when it holds another type.
  return (t != AttrType::kInts && t != AttrType::kFloats) || size > 0;
}

// Classifies the result `status` (released here) of reading attribute `name` as `want`. onnxruntime 1.19 and
// 1.32 report a missing attribute as ORT_FAIL "No attribute with name...", a scalar of another type as ORT_FAIL
// "Attribute name and type don't match", and read an attribute of another type as an empty list without error.
// So on failure, or on an empty list, the attribute is looked up as every other type: found -> an error naming
// both types; not found -> *present = false (failure) or an empty list (success).
Status absent_or_mistyped(const OrtApi* api, const OrtKernelInfo* info, const char* name, AttrType want,
                          OrtStatus* status, size_t list_size, bool* present) {
  const bool is_list = want == AttrType::kInts || want == AttrType::kFloats;
  *present = status == nullptr;
  if (*present && (!is_list || list_size > 0)) return Status();
  std::string message;
  if (status) {
    message = api->GetErrorMessage(status);
    api->ReleaseStatus(status);
  }
  const AttrType all[] = {AttrType::kInt, AttrType::kFloat, AttrType::kString, AttrType::kInts, AttrType::kFloats};
  for (AttrType t : all) {
    if (t != want && readable_as(api, info, name, t))
      return Status::Invalid(std::string("attribute '") + name + "' must be of type " + type_name(want) + ", got " +
                             type_name(t));
  }
  if (message.find("type don't match") != std::string::npos)
    return Status::Invalid(std::string("attribute '") + name + "' must be of type " + type_name(want) + " (" +
                           message + ")");
  return Status();  // absent, or an empty list
}

}  // namespace

Status attr_int(const OrtApi* api, const OrtKernelInfo* info, const char* name, int64_t* out, bool* present) {
  return absent_or_mistyped(api, info, name, AttrType::kInt, api->KernelInfoGetAttribute_int64(info, name, out), 0,
                            present);
}

Status attr_float(const OrtApi* api, const OrtKernelInfo* info, const char* name, float* out, bool* present) {
  return absent_or_mistyped(api, info, name, AttrType::kFloat, api->KernelInfoGetAttribute_float(info, name, out),
                            0, present);
}

Status attr_string(const OrtApi* api, const OrtKernelInfo* info, const char* name, std::string* out, bool* present) {
  size_t size = 0;
  OrtStatus* status = api->KernelInfoGetAttribute_string(info, name, nullptr, &size);
  INQ_RETURN_IF_ERROR(absent_or_mistyped(api, info, name, AttrType::kString, status, 0, present));
  if (!*present) return Status();
  std::string buf(size, '\0');
  INQ_ORT(api, KernelInfoGetAttribute_string(info, name, &buf[0], &size));
  buf.resize(std::strlen(buf.c_str()));
  *out = buf;
  return Status();
}

Status attr_ints(const OrtApi* api, const OrtKernelInfo* info, const char* name, std::vector<int64_t>* out,
                 bool* present) {
  size_t size = 0;
  out->clear();
  OrtStatus* status = api->KernelInfoGetAttributeArray_int64(info, name, nullptr, &size);  // sets size
  INQ_RETURN_IF_ERROR(absent_or_mistyped(api, info, name, AttrType::kInts, status, size, present));
  if (!*present || size == 0) return Status();
  out->resize(size);
  INQ_ORT(api, KernelInfoGetAttributeArray_int64(info, name, out->data(), &size));
  out->resize(size);
  return Status();
}

Status attr_floats(const OrtApi* api, const OrtKernelInfo* info, const char* name, std::vector<float>* out,
                   bool* present) {
  size_t size = 0;
  out->clear();
  OrtStatus* status = api->KernelInfoGetAttributeArray_float(info, name, nullptr, &size);
  INQ_RETURN_IF_ERROR(absent_or_mistyped(api, info, name, AttrType::kFloats, status, size, present));
  if (!*present || size == 0) return Status();
  out->resize(size);
  INQ_ORT(api, KernelInfoGetAttributeArray_float(info, name, out->data(), &size));
  out->resize(size);
  return Status();
}

Status with_prefix(const std::string& prefix, Status status) {
  if (status.ok()) return status;
  return Status(status.code(), prefix + status.message());
}

OrtStatus* exception_status(const OrtApi* api, const char* what, const char* detail) noexcept {
  try {
    return api->CreateStatus(ORT_RUNTIME_EXCEPTION, (std::string(what) + ": " + detail).c_str());
  } catch (...) {  // no memory for the message: report without it
    return api->CreateStatus(ORT_RUNTIME_EXCEPTION, "inq_onnx_ops: C++ exception (no memory to describe it)");
  }
}

Status tensor_ref(const OrtApi* api, const OrtValue* value, TensorRef* out) {
  *out = TensorRef();
  if (!value) return Status();
  OrtTensorTypeAndShapeInfo* info = nullptr;
  INQ_ORT(api, GetTensorTypeAndShape(value, &info));
  size_t rank = 0;
  Status s = from_ort(api, api->GetDimensionsCount(info, &rank));
  if (s.ok()) {
    out->shape.resize(rank);
    s = from_ort(api, api->GetDimensions(info, out->shape.data(), rank));
  }
  if (s.ok()) s = from_ort(api, api->GetTensorElementType(info, &out->type));
  api->ReleaseTensorTypeAndShapeInfo(info);
  INQ_RETURN_IF_ERROR(s);
  out->count = 1;
  for (int64_t d : out->shape) out->count *= d;
  INQ_ORT(api, GetTensorMutableData(const_cast<OrtValue*>(value), &out->data));
  out->present = true;
  return Status();
}

Status input(const OrtApi* api, OrtKernelContext* ctx, size_t index, TensorRef* out) {
  *out = TensorRef();
  size_t count = 0;
  INQ_ORT(api, KernelContext_GetInputCount(ctx, &count));
  if (index >= count) return Status();
  const OrtValue* value = nullptr;
  INQ_ORT(api, KernelContext_GetInput(ctx, index, &value));
  return tensor_ref(api, value, out);
}

Status output(const OrtApi* api, OrtKernelContext* ctx, size_t index, const std::vector<int64_t>& shape,
              TensorRef* out) {
  OrtValue* value = nullptr;
  INQ_ORT(api, KernelContext_GetOutput(ctx, index, shape.data(), shape.size(), &value));
  return tensor_ref(api, value, out);
}

Status constant_input(const OrtApi* api, const OrtKernelInfo* info, size_t index, TensorRef* out) {
  *out = TensorRef();
  size_t count = 0;
  INQ_ORT(api, KernelInfo_GetInputCount(info, &count));
  if (index >= count) return Status();
  int is_constant = 0;
  const OrtValue* value = nullptr;
  INQ_ORT(api, KernelInfoGetConstantInput_tensor(info, index, &is_constant, &value));
  if (!is_constant || !value) return Status();
  return tensor_ref(api, value, out);
}

namespace {
void parallel_for(void* state, void (*fn)(void*, size_t), size_t total, void* usr) {
  auto* self = static_cast<OrtTaskRunner*>(state);
  OrtStatus* s = self->api->KernelContext_ParallelFor(self->ctx, fn, total, 0, usr);
  if (s) {  // pool unavailable: run here
    self->api->ReleaseStatus(s);
    for (size_t i = 0; i < total; ++i) fn(usr, i);
  }
}
}  // namespace

OrtTaskRunner::OrtTaskRunner(const OrtApi* a, OrtKernelContext* c)
    : runner(g_api_version >= kParallelForApiVersion ? TaskRunner(&parallel_for, this) : TaskRunner()),
      api(a),
      ctx(c) {}

namespace {
const OpSpec& spec_of(const OrtCustomOp* op) { return static_cast<const CustomOp*>(op)->spec; }

const char* ORT_API_CALL op_name(const OrtCustomOp* op) { return spec_of(op).name; }
const char* ORT_API_CALL op_provider(const OrtCustomOp*) { return "CPUExecutionProvider"; }
ONNXTensorElementDataType ORT_API_CALL op_input_type(const OrtCustomOp* op, size_t i) {
  return spec_of(op).inputs[i];
}
size_t ORT_API_CALL op_input_count(const OrtCustomOp* op) { return spec_of(op).inputs.size(); }
ONNXTensorElementDataType ORT_API_CALL op_output_type(const OrtCustomOp* op, size_t) { return spec_of(op).output; }
size_t ORT_API_CALL op_output_count(const OrtCustomOp*) { return 1; }
OrtCustomOpInputOutputCharacteristic ORT_API_CALL op_input_characteristic(const OrtCustomOp* op, size_t i) {
  return spec_of(op).optional_inputs[i] ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
}
OrtCustomOpInputOutputCharacteristic ORT_API_CALL op_output_characteristic(const OrtCustomOp*, size_t) {
  return INPUT_OUTPUT_REQUIRED;
}
OrtMemType ORT_API_CALL op_input_memory_type(const OrtCustomOp*, size_t) { return OrtMemTypeDefault; }
int ORT_API_CALL op_variadic_arity(const OrtCustomOp*) { return 1; }
int ORT_API_CALL op_variadic_homogeneity(const OrtCustomOp*) { return 1; }
int ORT_API_CALL op_start_version(const OrtCustomOp*) { return 1; }
int ORT_API_CALL op_end_version(const OrtCustomOp*) { return INT_MAX; }
size_t ORT_API_CALL op_no_map(int** input_index, int** output_index) {
  *input_index = nullptr;
  *output_index = nullptr;
  return 0;
}
void ORT_API_CALL op_release_map(int*, int*) {}
// Legacy V1 entry points, never called because the V2 ones are set (API >= 16).
void* ORT_API_CALL op_create_v1(const OrtCustomOp*, const OrtApi*, const OrtKernelInfo*) { return nullptr; }
}  // namespace

void init_custom_op(CustomOp* op, OpSpec spec, uint32_t version) {
  OrtCustomOp* c = op;
  std::memset(c, 0, sizeof(OrtCustomOp));
  op->spec = std::move(spec);
  c->version = version;
  c->CreateKernel = op_create_v1;
  c->GetName = op_name;
  c->GetExecutionProviderType = op_provider;
  c->GetInputType = op_input_type;
  c->GetInputTypeCount = op_input_count;
  c->GetOutputType = op_output_type;
  c->GetOutputTypeCount = op_output_count;
  c->KernelCompute = nullptr;  // onnxruntime uses KernelComputeV2 when this is null
  c->KernelDestroy = op->spec.destroy;
  c->GetInputCharacteristic = op_input_characteristic;
  c->GetOutputCharacteristic = op_output_characteristic;
  c->GetInputMemoryType = op_input_memory_type;
  c->GetVariadicInputMinArity = op_variadic_arity;
  c->GetVariadicInputHomogeneity = op_variadic_homogeneity;
  c->GetVariadicOutputMinArity = op_variadic_arity;
  c->GetVariadicOutputHomogeneity = op_variadic_homogeneity;
  c->CreateKernelV2 = op->spec.create;
  c->KernelComputeV2 = op->spec.compute;
  c->InferOutputShapeFn = nullptr;
  c->GetStartVersion = op_start_version;
  c->GetEndVersion = op_end_version;
  c->GetMayInplace = op_no_map;
  c->ReleaseMayInplace = op_release_map;
  c->GetAliasMap = op_no_map;
  c->ReleaseAliasMap = op_release_map;
}

Status read_packed_shape(const OrtApi* api, const OrtKernelInfo* info, const std::string& op,
                         const std::vector<size_t>& ranks, PackedWeightAttrs* out) {
  const std::string prefix = op + ": ";
  bool present = false;
  int64_t bits = 0;
  INQ_RETURN_IF_ERROR(with_prefix(prefix, attr_int(api, info, "bits", &bits, &present)));
  if (!present) return Status::Invalid(prefix + "attribute 'bits' is required");
  if (bits < kMinBits || bits > kMaxBits)
    return Status::Invalid(prefix + "attribute bits must be in 2..8, got " + std::to_string(bits));
  out->bits = static_cast<int>(bits);

  INQ_RETURN_IF_ERROR(with_prefix(prefix, attr_ints(api, info, "weight_shape", &out->shape, &present)));
  if (!present) return Status::Invalid(prefix + "attribute 'weight_shape' is required");
  if (std::find(ranks.begin(), ranks.end(), out->shape.size()) == ranks.end()) {
    std::string allowed;
    for (size_t r : ranks) allowed += (allowed.empty() ? "" : " or ") + std::to_string(r);
    return Status::Invalid(prefix + "weight_shape " + shape_str(out->shape) + " must have rank " + allowed);
  }
  for (int64_t d : out->shape)
    if (d <= 0)
      return Status::Invalid(prefix + "weight_shape " + shape_str(out->shape) + " dimensions must be positive");
  if (element_count(out->shape) < 0)
    return Status::Invalid(prefix + "weight_shape " + shape_str(out->shape) + " has too many elements");
  return Status();
}

Status read_exponent_base(const OrtApi* api, const OrtKernelInfo* info, const std::string& prefix, int64_t channels,
                          const char* channel_name, PackedWeightAttrs* out) {
  bool present = false;
  INQ_RETURN_IF_ERROR(with_prefix(prefix, attr_ints(api, info, "exponent_base", &out->exponent_base, &present)));
  if (!present) return Status::Invalid(prefix + "attribute 'exponent_base' is required");
  if (out->exponent_base.size() != 1 && static_cast<int64_t>(out->exponent_base.size()) != channels)
    return Status::Invalid(prefix + "exponent_base has " + std::to_string(out->exponent_base.size()) +
                           " values; expected 1 or " + channel_name + " = " + std::to_string(channels));
  const std::string err = check_exponent_base(out->exponent_base);
  if (!err.empty()) return Status::Invalid(prefix + err);
  return Status();
}

Status check_packed_input(const TensorRef& packed, const PackedWeightAttrs& attrs, const std::string& prefix,
                          const char* input_name) {
  const std::string where = prefix + input_name + " shape " + shape_str(packed.shape);
  if (packed.shape.size() != 1) return Status::Invalid(where + ": must be 1-D");
  const std::string size_err = check_packed_size(packed.count, attrs.bits, attrs.shape);
  if (!size_err.empty()) return Status::Invalid(where + ": " + size_err);
  return Status();
}

Status decode_packed(const TensorRef& packed, const PackedWeightAttrs& attrs, const std::string& prefix,
                     const char* input_name, std::vector<float>* dense) {
  const std::string where = prefix + input_name + " shape " + shape_str(packed.shape);
  INQ_RETURN_IF_ERROR(check_packed_input(packed, attrs, prefix, input_name));
  dense->assign(static_cast<size_t>(element_count(attrs.shape)), 0.0f);
  const std::string err = decode_weights(static_cast<const uint8_t*>(packed.data), packed.count, attrs.bits,
                                         attrs.shape, attrs.exponent_base, attrs.channel_axis, dense->data());
  if (!err.empty()) return Status::Invalid(where + ": " + err);
  return Status();
}

Status read_activation(const OrtApi* api, const OrtKernelInfo* info, const std::string& prefix, Epilogue* out) {
  std::string name;
  std::vector<float> params;
  bool present = false, params_present = false;
  INQ_RETURN_IF_ERROR(with_prefix(prefix, attr_string(api, info, "activation", &name, &present)));
  INQ_RETURN_IF_ERROR(with_prefix(prefix, attr_floats(api, info, "activation_params", &params, &params_present)));
  out->activation = Activation::kNone;
  if (name.empty() || name == "None") {
    if (!params.empty()) return Status::Invalid(prefix + "activation_params given without an activation");
  } else if (name == "Relu") {
    if (!params.empty()) return Status::Invalid(prefix + "activation Relu takes no activation_params");
    out->activation = Activation::kRelu;
  } else if (name == "Clip") {
    if (params.size() != 2 || !(params[0] <= params[1]))
      return Status::Invalid(prefix + "activation Clip needs activation_params [min, max] with min <= max");
    out->activation = Activation::kClip;
    out->clip_min = params[0];
    out->clip_max = params[1];
  } else {
    return Status::Invalid(prefix + "unknown activation '" + name + "' (Relu or Clip)");
  }
  return Status();
}

Status read_integer_mode(const OrtApi* api, const OrtKernelInfo* info, const std::string& prefix, bool* integer,
                         QuantParams* q) {
  std::string mode;
  float scale = 0.0f;
  int64_t zero_point = 0;
  bool present = false, scale_present = false, zp_present = false;
  INQ_RETURN_IF_ERROR(with_prefix(prefix, attr_string(api, info, "quantize_input", &mode, &present)));
  INQ_RETURN_IF_ERROR(with_prefix(prefix, attr_float(api, info, "x_scale", &scale, &scale_present)));
  INQ_RETURN_IF_ERROR(with_prefix(prefix, attr_int(api, info, "x_zero_point", &zero_point, &zp_present)));
  *integer = false;
  if (mode.empty()) {
    if (scale_present || zp_present)
      return Status::Invalid(prefix + "x_scale / x_zero_point need quantize_input uint8");
    return Status();
  }
  if (mode != "uint8") return Status::Invalid(prefix + "unknown quantize_input '" + mode + "' (uint8, or empty)");
  if (scale_present && !(scale > 0.0f && std::isfinite(scale)))
    return Status::Invalid(prefix + "x_scale " + std::to_string(scale) + " must be positive and finite");
  if (zero_point < 0 || zero_point > 255)
    return Status::Invalid(prefix + "x_zero_point " + std::to_string(zero_point) + " is outside 0..255");
  if (zp_present && !scale_present) return Status::Invalid(prefix + "x_zero_point needs x_scale");
  *integer = true;
  q->scale = scale_present ? scale : 0.0f;  // 0: dynamic
  q->zero_point = static_cast<int32_t>(zero_point);
  return Status();
}

}  // namespace inq
