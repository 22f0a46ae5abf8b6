// Decoding of bit-packed INQ weight codes (docs/ops.md, "Packed weight format") into float32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace inq {

constexpr int kMinBits = 2;
constexpr int kMaxBits = 8;

// Number of elements of `shape`; -1 if a dimension is negative or the product overflows int64.
int64_t element_count(const std::vector<int64_t>& shape);

// Bytes that `count` codes of `bits` bits occupy: ceil(count * bits / 8).
int64_t packed_byte_count(int64_t count, int bits);

// Decodes `packed` (row-major codes of a tensor of `shape`) into `out` (prod(shape) floats).
// `exponent_base` has one value, or one per index of `shape[channel_axis]`.
// Returns an empty string on success, else a message naming the sizes that do not fit.
std::string decode_weights(const uint8_t* packed, int64_t packed_bytes, int bits, const std::vector<int64_t>& shape,
                           const std::vector<int64_t>& exponent_base, int channel_axis, float* out);

// Value of one code: 0, or +-2^(base + m - 1). Exposed for tests.
float decode_code(unsigned code, int bits, int64_t base);

}  // namespace inq
