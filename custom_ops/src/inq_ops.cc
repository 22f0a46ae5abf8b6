// Library entry point: the com.inq domain, C API version negotiation and RegisterCustomOps.
#include <onnxruntime_c_api.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "ort_util.h"
#include "shift_conv.h"
#include "shift_gemm.h"
#include "shift_matmul.h"

namespace inq {
namespace {

constexpr const char* kDomain = "com.inq";

// "1.19.2" -> 19: onnxruntime 1.x exposes C API version x. 0 if the string has another form.
uint32_t api_version_of(const char* version) {
  if (!version) return 0;
  unsigned major = 0, minor = 0;
  if (std::sscanf(version, "%u.%u", &major, &minor) != 2 || major != 1) return 0;
  return minor;
}

// The newest C API, at most ORT_API_VERSION (our headers), that the runtime provides; *version = 0 if none from
// `lowest` up. The version string only chooses where to start (asking onnxruntime for a version it does not
// have makes it print a warning); the answer comes from GetApi itself, so a future numbering still works.
const OrtApi* newest_api(const OrtApiBase* base, uint32_t lowest, uint32_t* version) {
  uint32_t start = ORT_API_VERSION;
  const uint32_t hint = api_version_of(base->GetVersionString());
  if (hint >= lowest && hint < start) start = hint;
  for (uint32_t v = start; v >= lowest && v > 0; --v) {
    if (const OrtApi* api = base->GetApi(v)) {
      *version = v;
      return api;
    }
  }
  *version = 0;
  return nullptr;
}

std::mutex g_mutex;
// ShiftConv once per element-type variant (ShiftConv::specs(): float X / Z / Y first), then ShiftGemm and
// ShiftMatMul. Sized once; onnxruntime keeps pointers to the entries.
std::vector<CustomOp> g_ops;
// Created once and kept for the process: sessions must not outlive the domain, and onnxruntime accepts the
// same domain object in several SessionOptions.
OrtCustomOpDomain* g_domain = nullptr;

OrtStatus* register_ops(const OrtApi* api, OrtSessionOptions* options, uint32_t version) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_ops.empty()) {
    std::vector<OpSpec> specs = ShiftConv::specs();
    specs.push_back(ShiftGemm::spec());
    specs.push_back(ShiftMatMul::spec());
    g_ops.resize(specs.size());
    for (size_t i = 0; i < specs.size(); ++i) init_custom_op(&g_ops[i], specs[i], version);
    g_api_version = version;
  } else if (g_ops[0].version != version) {
    return api->CreateStatus(ORT_FAIL, "inq_onnx_ops: already registered with another onnxruntime API version");
  }
  if (!g_domain) {
    OrtCustomOpDomain* domain = nullptr;
    if (OrtStatus* s = api->CreateCustomOpDomain(kDomain, &domain)) return s;
    OrtStatus* s = nullptr;
    for (size_t i = 0; i < g_ops.size() && !s; ++i) s = api->CustomOpDomain_Add(domain, &g_ops[i]);
    if (s) {
      api->ReleaseCustomOpDomain(domain);
      return s;
    }
    g_domain = domain;
  }
  return api->AddCustomOpDomain(options, g_domain);
}

}  // namespace
}  // namespace inq

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  // Without an OrtApi no OrtStatus can be made: say so on stderr. onnxruntime then reports the unknown com.inq
  // operators when it loads a model.
  if (!api_base) {
    std::fputs("inq_onnx_ops: RegisterCustomOps called without an OrtApiBase; no operators registered\n", stderr);
    return nullptr;
  }
  uint32_t version = 0;
  const OrtApi* api = inq::newest_api(api_base, inq::kMinApiVersion, &version);
  if (!api) {
    // Report through the newest API the runtime has; CreateStatus exists in every version.
    uint32_t old_version = 0;
    const OrtApi* old_api = inq::newest_api(api_base, 1, &old_version);
    const char* runtime = api_base->GetVersionString();
    if (!old_api) {
      std::fprintf(stderr, "inq_onnx_ops: onnxruntime %s provides no usable C API; no operators registered\n",
                   runtime ? runtime : "?");
      return nullptr;
    }
    try {
      const std::string msg = std::string("inq_onnx_ops needs onnxruntime >= 1.16 (C API ") +
                              std::to_string(inq::kMinApiVersion) + "), this is onnxruntime " +
                              (runtime ? runtime : "?");
      return old_api->CreateStatus(ORT_FAIL, msg.c_str());
    } catch (...) {
      return old_api->CreateStatus(ORT_FAIL, "inq_onnx_ops needs onnxruntime >= 1.16");
    }
  }
  try {
    return inq::register_ops(api, options, version);
  } catch (const std::exception& e) {
    return inq::exception_status(api, "inq_onnx_ops", e.what());
  } catch (...) {
    return api->CreateStatus(ORT_RUNTIME_EXCEPTION, "inq_onnx_ops: registration failed");
  }
}
