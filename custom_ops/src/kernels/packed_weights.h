// Decoding of bit-packed INQ weight codes (docs/ops.md, "Packed weight format") into float32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace inq {

constexpr int kMinBits = 2;
constexpr int kMaxBits = 8;
// |exponent_base| limit: float32 has no powers of two beyond 2^+-150, so larger bases only mean a corrupt model.
constexpr int64_t kMaxExponentBase = 1000;

// Number of elements of `shape`; -1 if a dimension is negative or the product overflows int64.
int64_t element_count(const std::vector<int64_t>& shape);

// Bytes that `count` codes of `bits` bits occupy: ceil(count * bits / 8).
int64_t packed_byte_count(int64_t count, int bits);

// Empty string if every exponent_base value lies in [-kMaxExponentBase, kMaxExponentBase], else a message
// naming the first offending value.
std::string check_exponent_base(const std::vector<int64_t>& exponent_base);

// Empty string if `packed_bytes` is the size of prod(shape) codes of `bits` bits, else a message naming the sizes.
// Checks only sizes (no allocation), so callers run it before allocating the decoded tensor.
std::string check_packed_size(int64_t packed_bytes, int bits, const std::vector<int64_t>& shape);

// Decodes `packed` (row-major codes of a tensor of `shape`) into `out` (prod(shape) floats).
// `exponent_base` has one value, or one per index of `shape[channel_axis]`.
// Returns an empty string on success, else a message naming the sizes that do not fit.
std::string decode_weights(const uint8_t* packed, int64_t packed_bytes, int bits, const std::vector<int64_t>& shape,
                           const std::vector<int64_t>& exponent_base, int channel_axis, float* out);

// Integer mode: the codes as exact integer levels +-2^(m - 1) (the value over its channel's unit 2^e) in
// `levels` (prod(shape) values) and the units in `unit` (`channels` floats: shape[channel_axis], or 1 per
// tensor when exponent_base has one value). Levels beyond +-128 (more than 5 bits) and units outside float's
// normal range are errors.
std::string decode_levels(const uint8_t* packed, int64_t packed_bytes, int bits, const std::vector<int64_t>& shape,
                          const std::vector<int64_t>& exponent_base, int channel_axis, int16_t* levels,
                          std::vector<float>* unit);

// Value of one code: 0, or +-2^(base + m - 1) (+-inf / +-0 beyond float range; defined for any base). Exposed
// for tests.
float decode_code(unsigned code, int bits, int64_t base);

}  // namespace inq
