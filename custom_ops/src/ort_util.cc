// onnxruntime C API helpers (see ort_util.h).
#include "ort_util.h"

#include <climits>
#include <cstring>

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
// onnxruntime reports a missing attribute as a failed status; we treat it as "absent".
bool absent(const OrtApi* api, OrtStatus* status) {
  if (!status) return false;
  api->ReleaseStatus(status);
  return true;
}
}  // namespace

Status attr_int(const OrtApi* api, const OrtKernelInfo* info, const char* name, int64_t* out, bool* present) {
  *present = !absent(api, api->KernelInfoGetAttribute_int64(info, name, out));
  return Status();
}

Status attr_float(const OrtApi* api, const OrtKernelInfo* info, const char* name, float* out, bool* present) {
  *present = !absent(api, api->KernelInfoGetAttribute_float(info, name, out));
  return Status();
}

Status attr_string(const OrtApi* api, const OrtKernelInfo* info, const char* name, std::string* out, bool* present) {
  size_t size = 0;
  *present = !absent(api, api->KernelInfoGetAttribute_string(info, name, nullptr, &size));
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
  *present = !absent(api, api->KernelInfoGetAttributeArray_int64(info, name, nullptr, &size));
  out->clear();
  if (!*present || size == 0) return Status();
  out->resize(size);
  INQ_ORT(api, KernelInfoGetAttributeArray_int64(info, name, out->data(), &size));
  out->resize(size);
  return Status();
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

}  // namespace inq
