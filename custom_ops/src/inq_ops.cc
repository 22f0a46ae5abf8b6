// Library entry point: the com.inq domain, C API version negotiation and RegisterCustomOps.
#include <onnxruntime_c_api.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>

#include "ort_util.h"
#include "shift_conv.h"
#include "shift_gemm.h"

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
CustomOp g_conv_op;  // ShiftConv, float X / Z / Y
CustomOp g_conv_variants[7];  // ShiftConv with uint8 X / Z / Y (ShiftConv::specs() after the first)
CustomOp g_gemm_op;
// Created once and kept for the process: sessions must not outlive the domain, and onnxruntime accepts the
// same domain object in several SessionOptions.
OrtCustomOpDomain* g_domain = nullptr;

OrtStatus* register_ops(const OrtApi* api, OrtSessionOptions* options, uint32_t version) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_conv_op.version == 0) {
    const std::vector<OpSpec> conv = ShiftConv::specs();
    init_custom_op(&g_conv_op, conv[0], version);
    for (size_t i = 1; i < conv.size() && i <= 7; ++i) init_custom_op(&g_conv_variants[i - 1], conv[i], version);
    init_custom_op(&g_gemm_op, ShiftGemm::spec(), version);
    g_api_version = version;
  } else if (g_conv_op.version != version) {
    return api->CreateStatus(ORT_FAIL, "inq_onnx_ops: already registered with another onnxruntime API version");
  }
  if (!g_domain) {
    OrtCustomOpDomain* domain = nullptr;
    if (OrtStatus* s = api->CreateCustomOpDomain(kDomain, &domain)) return s;
    OrtStatus* s = api->CustomOpDomain_Add(domain, &g_conv_op);
    for (size_t i = 0; i < 7 && !s; ++i) s = api->CustomOpDomain_Add(domain, &g_conv_variants[i]);
    if (!s) s = api->CustomOpDomain_Add(domain, &g_gemm_op);
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
