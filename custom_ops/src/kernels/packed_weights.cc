// Bit-packed code -> float decoding through a per-channel lookup table.
#include "kernels/packed_weights.h"

#include <cmath>
#include <cstdint>
#include <limits>

namespace inq {

int64_t element_count(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return -1;
    if (d != 0 && n > std::numeric_limits<int64_t>::max() / 8 / d) return -1;
    n *= d;
  }
  return n;
}

int64_t packed_byte_count(int64_t count, int bits) { return (count * bits + 7) / 8; }

std::string check_exponent_base(const std::vector<int64_t>& exponent_base) {
  for (size_t i = 0; i < exponent_base.size(); ++i) {
    const int64_t b = exponent_base[i];
    if (b < -kMaxExponentBase || b > kMaxExponentBase)
      return "exponent_base[" + std::to_string(i) + "] = " + std::to_string(b) + " is outside [-" +
             std::to_string(kMaxExponentBase) + ", " + std::to_string(kMaxExponentBase) + "]";
  }
  return {};
}

std::string check_packed_size(int64_t packed_bytes, int bits, const std::vector<int64_t>& shape) {
  if (bits < kMinBits || bits > kMaxBits) return "bits must be in 2..8, got " + std::to_string(bits);
  const int64_t count = element_count(shape);
  if (count < 0) return "weight_shape has a negative dimension or too many elements";
  const int64_t need = packed_byte_count(count, bits);  // count <= INT64_MAX / 8: no overflow
  if (packed_bytes != need) {
    return "packed weight has " + std::to_string(packed_bytes) + " bytes; " + std::to_string(count) +
           " codes of " + std::to_string(bits) + " bits need " + std::to_string(need);
  }
  return {};
}

float decode_code(unsigned code, int bits, int64_t base) {
  const unsigned m = code & ((1u << (bits - 1)) - 1u);
  if (m == 0) return 0.0f;
  const bool negative = (code >> (bits - 1)) & 1u;
  // Clamp before adding (no signed overflow for any base); beyond +-4096 every double is +-inf / 0 anyway, as
  // numpy's ldexp gives.
  const int64_t b = base > 4096 ? 4096 : (base < -4096 ? -4096 : base);
  int64_t e = b + static_cast<int64_t>(m) - 1;
  if (e > 4096) e = 4096;
  if (e < -4096) e = -4096;
  const double v = std::ldexp(1.0, static_cast<int>(e));  // exact in double, rounded once to float
  return static_cast<float>(negative ? -v : v);
}

std::string decode_weights(const uint8_t* packed, int64_t packed_bytes, int bits, const std::vector<int64_t>& shape,
                           const std::vector<int64_t>& exponent_base, int channel_axis, float* out) {
  const std::string size_err = check_packed_size(packed_bytes, bits, shape);
  if (!size_err.empty()) return size_err;
  const int64_t count = element_count(shape);
  const int rank = static_cast<int>(shape.size());
  int64_t channels = 1, inner = 1;
  if (exponent_base.size() != 1) {
    if (channel_axis < 0 || channel_axis >= rank || static_cast<int64_t>(exponent_base.size()) != shape[channel_axis]) {
      return "exponent_base has " + std::to_string(exponent_base.size()) + " values; expected 1 or " +
             (channel_axis >= 0 && channel_axis < rank ? std::to_string(shape[channel_axis]) : std::string("?"));
    }
    channels = shape[channel_axis];
    for (int d = channel_axis + 1; d < rank; ++d) inner *= shape[d];
  }
  if (count == 0) return {};

  const unsigned ncodes = 1u << bits;
  std::vector<float> table(static_cast<size_t>(channels) * ncodes);
  for (int64_t c = 0; c < channels; ++c)
    for (unsigned code = 0; code < ncodes; ++code) table[c * ncodes + code] = decode_code(code, bits, exponent_base[c]);

  const unsigned mask = ncodes - 1u;
  auto code_at = [&](int64_t i) -> unsigned {
    const int64_t bit = i * bits;
    const int64_t byte = bit >> 3;
    unsigned word = packed[byte];
    if (byte + 1 < packed_bytes) word |= static_cast<unsigned>(packed[byte + 1]) << 8;
    return (word >> (bit & 7)) & mask;
  };
  if (channels == 1) {
    const float* t = table.data();
    for (int64_t i = 0; i < count; ++i) out[i] = t[code_at(i)];
  } else {
    int64_t i = 0;
    for (int64_t outer = 0; i < count; ++outer)
      for (int64_t c = 0; c < channels; ++c) {
        const float* t = table.data() + c * ncodes;
        for (int64_t j = 0; j < inner; ++j, ++i) out[i] = t[code_at(i)];
      }
  }
  return {};
}

std::string decode_levels(const uint8_t* packed, int64_t packed_bytes, int bits, const std::vector<int64_t>& shape,
                          const std::vector<int64_t>& exponent_base, int channel_axis, int16_t* levels,
                          std::vector<float>* unit) {
  const std::string base_err = check_exponent_base(exponent_base);
  if (!base_err.empty()) return base_err;
  const std::string size_err = check_packed_size(packed_bytes, bits, shape);
  if (!size_err.empty()) return size_err;
  const int rank = static_cast<int>(shape.size());
  if (exponent_base.size() != 1 && (channel_axis < 0 || channel_axis >= rank ||
                                    static_cast<int64_t>(exponent_base.size()) != shape[channel_axis]))
    return "exponent_base has " + std::to_string(exponent_base.size()) + " values; expected 1 or one per channel";
  // Level of each code: 0, or +-2^(m - 1) relative to the channel's unit; written straight into `levels` (no
  // float copy of the tensor: sessions load large layers, and a transient copy would stay in the heap).
  const unsigned ncodes = 1u << bits, sign = 1u << (bits - 1);
  int16_t table[256];
  for (unsigned code = 0; code < ncodes; ++code) {
    const unsigned m = code & (sign - 1);
    if (m > 8) table[code] = INT16_MAX;  // beyond +-128: refused below if used
    else table[code] = m == 0 ? 0 : static_cast<int16_t>((code & sign ? -1 : 1) * (1 << (m - 1)));
  }
  const int64_t count = element_count(shape);
  for (int64_t i = 0; i < count; ++i) {
    const int64_t bit = i * bits, byte = bit >> 3;
    unsigned word = packed[byte];
    if (byte + 1 < packed_bytes) word |= static_cast<unsigned>(packed[byte + 1]) << 8;
    const int16_t level = table[(word >> (bit & 7)) & (ncodes - 1u)];
    if (level == INT16_MAX)
      return "a level beyond 128 times its channel's 2^exponent_base: integer mode takes at most 5-bit levels";
    levels[i] = level;
  }
  unit->resize(exponent_base.size());
  for (size_t c = 0; c < exponent_base.size(); ++c) {
    (*unit)[c] = std::ldexp(1.0f, static_cast<int>(exponent_base[c]));
    if (!std::isnormal((*unit)[c]))
      return "exponent_base " + std::to_string(exponent_base[c]) + " is outside float's normal range";
  }
  return {};
}

}  // namespace inq
