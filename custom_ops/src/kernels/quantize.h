// Per-tensor uint8 activation quantization, ONNX QuantizeLinear / DynamicQuantizeLinear semantics.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/qkernels.h"
#include "kernels/thread_pool.h"

namespace inq {

// real = scale * (q - zero_point). scale <= 0 (or not finite) asks for dynamic parameters from each run's input.
struct QuantParams {
  float scale = 0.0f;
  int32_t zero_point = 0;
  bool dynamic() const { return !(scale > 0.0f) || !std::isfinite(scale); }
};

// q = saturate_u8(round_half_even(x / scale) + zp), computed in float: exact for every q in [0, 255] and
// NaN -> 0. Every ISA path performs these very float operations.
inline uint8_t saturated_code(float quotient, float zpf) {
  float f = std::nearbyint(quotient) + zpf;
  f = f > 0.0f ? f : 0.0f;
  f = f < 255.0f ? f : 255.0f;
  return static_cast<uint8_t>(static_cast<int>(f));
}
inline uint8_t quantize_one(float x, float scale, float zpf) { return saturated_code(x / scale, zpf); }

// The requantization of uint8 outputs: q = saturate_u8(round_half_even(v * inv_scale) + zp), inv_scale =
// 1 / scale computed once in float. A multiply where quantize_one divides: every output value pays it (a
// vector division costs about as much as the rest of the rescale); the two differ only where float rounding
// puts the quotient on the other side of a half step. Every ISA path performs these very float operations.
inline float inverse_scale(float scale) { return 1.0f / scale; }
inline uint8_t requantize_one(float v, float inv_scale, float zpf) { return saturated_code(v * inv_scale, zpf); }

// DynamicQuantizeLinear's rule: lo = min(0, min x), hi = max(0, max x), scale = (hi - lo) / 255 (1 if 0),
// zp = round_half_even(clamp(0 - lo / scale, 0, 255)).
QuantParams dynamic_params(float lo, float hi);
// Parameters of a whole tensor (NaNs ignored).
QuantParams dynamic_params(const QKernels& k, const float* x, int64_t n);
// The same, the min / max pass split over the runner's tasks (min and max do not depend on the order; every
// chunk starts from 0 as the serial pass does, and +-0 both clamp to 0).
QuantParams dynamic_params(const QKernels& k, const float* x, int64_t n, const TaskRunner& runner);

}  // namespace inq
