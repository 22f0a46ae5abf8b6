// Library entry point: the com.inq domain, C API version negotiation and RegisterCustomOps.
#include <onnxruntime_c_api.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "ort_util.h"
#include "shift_conv.h"
#include "shift_gemm.h"

namespace inq {
namespace {

constexpr const char* kDomain = "com.inq";

// "1.19.2" -> 19: onnxruntime 1.x exposes C API version x.
uint32_t api_version_of(const char* version) {
  if (!version) return 0;
  unsigned major = 0, minor = 0;
  if (std::sscanf(version, "%u.%u", &major, &minor) != 2 || major != 1) return 0;
  return minor;
}

std::mutex g_mutex;
CustomOp g_conv_op;
CustomOp g_gemm_op;
// Domains must outlive every session created from the options they were added to; kept for the process.
std::vector<OrtCustomOpDomain*> g_domains;

OrtStatus* register_ops(const OrtApi* api, OrtSessionOptions* options, uint32_t version) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_conv_op.version == 0) {
    init_custom_op(&g_conv_op, ShiftConv::spec(), version);
    init_custom_op(&g_gemm_op, ShiftGemm::spec(), version);
    g_api_version = version;
  } else if (g_conv_op.version != version) {
    return api->CreateStatus(ORT_FAIL, "inq_onnx_ops: already registered with another onnxruntime API version");
  }
  OrtCustomOpDomain* domain = nullptr;
  if (OrtStatus* s = api->CreateCustomOpDomain(kDomain, &domain)) return s;
  OrtStatus* s = api->CustomOpDomain_Add(domain, &g_conv_op);
  if (!s) s = api->CustomOpDomain_Add(domain, &g_gemm_op);
  if (!s) s = api->AddCustomOpDomain(options, domain);
  if (s) {
    api->ReleaseCustomOpDomain(domain);
    return s;
  }
  g_domains.push_back(domain);
  return nullptr;
}

}  // namespace
}  // namespace inq

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  if (!api_base) return nullptr;  // nothing to report through
  const char* runtime = api_base->GetVersionString();
  const uint32_t runtime_api = inq::api_version_of(runtime);
  const uint32_t version = std::min<uint32_t>(runtime_api, ORT_API_VERSION);
  if (version < inq::kMinApiVersion) {
    // Report through the oldest API the runtime has; CreateStatus exists in every version.
    const OrtApi* old_api = api_base->GetApi(runtime_api ? runtime_api : 1);
    if (!old_api) return nullptr;
    const std::string msg = std::string("inq_onnx_ops needs onnxruntime >= 1.16 (C API ") +
                            std::to_string(inq::kMinApiVersion) + "), this is onnxruntime " +
                            (runtime ? runtime : "?");
    return old_api->CreateStatus(ORT_FAIL, msg.c_str());
  }
  const OrtApi* api = api_base->GetApi(version);
  if (!api) return nullptr;
  try {
    return inq::register_ops(api, options, version);
  } catch (const std::exception& e) {
    return api->CreateStatus(ORT_RUNTIME_EXCEPTION, (std::string("inq_onnx_ops: ") + e.what()).c_str());
  } catch (...) {
    return api->CreateStatus(ORT_RUNTIME_EXCEPTION, "inq_onnx_ops: registration failed");
  }
}
