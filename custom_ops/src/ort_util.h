// Helpers over the onnxruntime C API: status conversion, attribute and tensor access, custom-op tables.
#pragma once

#include <onnxruntime_c_api.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/epilogue.h"
#include "kernels/quantize.h"
#include "kernels/thread_pool.h"

namespace inq {

// API version negotiated in RegisterCustomOps (min(runtime API, ORT_API_VERSION of our headers)).
extern uint32_t g_api_version;
constexpr uint32_t kMinApiVersion = 16;        // CreateKernelV2 / KernelComputeV2
constexpr uint32_t kParallelForApiVersion = 17;  // KernelContext_ParallelFor

// Result of an internal step; converted to an OrtStatus* only at the C ABI boundary.
class Status {
 public:
  Status() = default;
  Status(OrtErrorCode code, std::string message) : code_(code), message_(std::move(message)), ok_(false) {}
  static Status Invalid(std::string message) { return Status(ORT_INVALID_ARGUMENT, std::move(message)); }
  bool ok() const { return ok_; }
  OrtErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }

 private:
  OrtErrorCode code_ = ORT_OK;
  std::string message_;
  bool ok_ = true;
};

#define INQ_RETURN_IF_ERROR(expr)      \
  do {                                 \
    ::inq::Status _inq_s = (expr);     \
    if (!_inq_s.ok()) return _inq_s;   \
  } while (0)

// Wraps an OrtApi call: a failing call becomes a Status (the OrtStatus is released).
Status from_ort(const OrtApi* api, OrtStatus* status);
#define INQ_ORT(api, call) INQ_RETURN_IF_ERROR(::inq::from_ort((api), (api)->call))

OrtStatus* to_ort(const OrtApi* api, const Status& status);

std::string shape_str(const std::vector<int64_t>& shape);

// Attribute readers: *present = false (and Status ok) when the attribute is absent; an error naming the attribute
// and both types when it is present with another type.
Status attr_int(const OrtApi* api, const OrtKernelInfo* info, const char* name, int64_t* out, bool* present);
Status attr_float(const OrtApi* api, const OrtKernelInfo* info, const char* name, float* out, bool* present);
Status attr_string(const OrtApi* api, const OrtKernelInfo* info, const char* name, std::string* out, bool* present);
Status attr_floats(const OrtApi* api, const OrtKernelInfo* info, const char* name, std::vector<float>* out,
                   bool* present);
Status attr_ints(const OrtApi* api, const OrtKernelInfo* info, const char* name, std::vector<int64_t>* out,
                 bool* present);

// `status` with `prefix` put before its message.
Status with_prefix(const std::string& prefix, Status status);

// A tensor input or output: shape and data.
struct TensorRef {
  bool present = false;
  std::vector<int64_t> shape;
  int64_t count = 0;
  void* data = nullptr;
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
};
Status tensor_ref(const OrtApi* api, const OrtValue* value, TensorRef* out);
Status input(const OrtApi* api, OrtKernelContext* ctx, size_t index, TensorRef* out);  // absent -> !present
Status output(const OrtApi* api, OrtKernelContext* ctx, size_t index, const std::vector<int64_t>& shape,
              TensorRef* out);
// The constant initializer feeding input `index`, if it is one.
Status constant_input(const OrtApi* api, const OrtKernelInfo* info, size_t index, TensorRef* out);

// Runs tasks on the session's intra-op pool (serially before API 17).
struct OrtTaskRunner {
  OrtTaskRunner(const OrtApi* api, OrtKernelContext* ctx);
  OrtTaskRunner(const OrtTaskRunner&) = delete;  // `runner` points at this object
  OrtTaskRunner& operator=(const OrtTaskRunner&) = delete;
  TaskRunner runner;
  const OrtApi* api;
  OrtKernelContext* ctx;
};

// Table of one custom operator: a C++ description filled into an OrtCustomOp.
struct OpSpec {
  const char* name;
  std::vector<ONNXTensorElementDataType> inputs;
  std::vector<bool> optional_inputs;
  ONNXTensorElementDataType output;
  OrtStatusPtr(ORT_API_CALL* create)(const OrtCustomOp*, const OrtApi*, const OrtKernelInfo*, void**);
  OrtStatusPtr(ORT_API_CALL* compute)(void*, OrtKernelContext*);
  void(ORT_API_CALL* destroy)(void*);
};

struct CustomOp : OrtCustomOp {
  OpSpec spec;
};

// Fills every OrtCustomOp field; `version` is the negotiated API version.
void init_custom_op(CustomOp* op, OpSpec spec, uint32_t version);

// ORT_RUNTIME_EXCEPTION status "what: detail"; without the text if even that allocation fails.
OrtStatus* exception_status(const OrtApi* api, const char* what, const char* detail) noexcept;

// Runs `body` (returning Status) and converts any exception to an error status: nothing crosses the ABI.
template <class F>
OrtStatus* guarded(const OrtApi* api, const char* what, F&& body) noexcept {
  try {
    return to_ort(api, body());
  } catch (const std::exception& e) {
    return exception_status(api, what, e.what());
  } catch (...) {
    return exception_status(api, what, "unknown C++ exception");
  }
}

// The C entry points of an operator whose kernel class K has `static constexpr const char* kName`,
// `K(const OrtApi*)`, `Status init(const OrtKernelInfo*)`, `Status compute(OrtKernelContext*) const` and `api()`.
template <class K>
OpSpec kernel_op_spec(std::vector<ONNXTensorElementDataType> inputs, std::vector<bool> optional_inputs) {
  struct Entry {
    static OrtStatusPtr ORT_API_CALL create(const OrtCustomOp*, const OrtApi* api, const OrtKernelInfo* info,
                                            void** kernel) {
      *kernel = nullptr;
      return guarded(api, K::kName, [&]() -> Status {
        auto k = std::make_unique<K>(api);
        INQ_RETURN_IF_ERROR(k->init(info));
        *kernel = k.release();
        return Status();
      });
    }
    static OrtStatusPtr ORT_API_CALL compute(void* kernel, OrtKernelContext* ctx) {
      auto* k = static_cast<K*>(kernel);
      return guarded(k->api(), K::kName, [&] { return k->compute(ctx); });
    }
    static void ORT_API_CALL destroy(void* kernel) { delete static_cast<K*>(kernel); }
  };
  return OpSpec{K::kName, std::move(inputs), std::move(optional_inputs), ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
                &Entry::create, &Entry::compute, &Entry::destroy};
}

// The attributes that describe a packed weight (bits, weight_shape, exponent_base), shared by both operators.
struct PackedWeightAttrs {
  int bits = 0;
  std::vector<int64_t> shape;
  std::vector<int64_t> exponent_base;  // 1 value, or one per output channel
  int channel_axis = 0;                // weight axis of the output channels
};

// Reads bits and weight_shape (whose rank must be one of `ranks`); `op` prefixes the messages.
Status read_packed_shape(const OrtApi* api, const OrtKernelInfo* info, const std::string& op,
                         const std::vector<size_t>& ranks, PackedWeightAttrs* out);
// Reads exponent_base, which must hold 1 or `channels` values (named `channel_name` in the message).
Status read_exponent_base(const OrtApi* api, const OrtKernelInfo* info, const std::string& prefix, int64_t channels,
                          const char* channel_name, PackedWeightAttrs* out);
// Reads the fused activation: `activation` ("" / "Relu" / "Clip") and `activation_params` (Clip: min, max).
Status read_activation(const OrtApi* api, const OrtKernelInfo* info, const std::string& prefix, Epilogue* out);
// Reads the integer mode: `quantize_input` ("" or "uint8"), `x_scale` (> 0; absent: dynamic per run) and
// `x_zero_point` (0..255). *integer = false and *q untouched in float mode.
Status read_integer_mode(const OrtApi* api, const OrtKernelInfo* info, const std::string& prefix, bool* integer,
                         QuantParams* q);
// Checks a packed weight input before anything is allocated for it: 1-D, and the byte count of its codes.
Status check_packed_input(const TensorRef& packed, const PackedWeightAttrs& attrs, const std::string& prefix,
                          const char* input_name);
// Decodes a packed weight input (checked as above) into dense floats in the weight's layout.
Status decode_packed(const TensorRef& packed, const PackedWeightAttrs& attrs, const std::string& prefix,
                     const char* input_name, std::vector<float>* dense);

}  // namespace inq
