// Blocked float GEMM over packed panels with run-time dispatched micro-kernels (AVX-512F, AVX2+FMA, portable).
//
// C (m x n, row stride ldc) = init + alpha * A (m x k) * B (k x n), where init is C itself (accumulate),
// a per-row bias, or zero. A is consumed as panels of `mr` rows, B as panels of `nr` columns; each panel
// is stored depth-major: panel[d * width + i]. Either operand can be pre-packed over its whole depth once
// (constant weights) or packed block by block from any source (strided matrix, im2col).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "kernels/microkernel.h"
#include "kernels/scratch.h"

namespace inq {

// The kernel for this CPU (see cpu_features.h); the same one for the whole process.
const MicroKernel& active_kernel();
// Kernel of a given ISA name ("generic", "avx2", "avx512"), or nullptr if not compiled in / not supported.
const MicroKernel* kernel_by_name(const char* name);

// 64-byte aligned float storage.
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t count) { resize(count); }
  void resize(size_t count);  // contents are not preserved
  float* data() { return data_.get(); }
  const float* data() const { return data_.get(); }
  size_t size() const { return size_; }

 private:
  struct Free { void operator()(float* p) const; };
  std::unique_ptr<float, Free> data_;
  size_t size_ = 0;
};

// Packs rows [r0, r0+rn) x depth [d0, d0+dn) of the matrix element(r, d) = src[r*r_stride + d*d_stride]
// into ceil(rn/width) panels of dn*width floats; rows past rn are zero.
void pack_panels(const float* src, int64_t r_stride, int64_t d_stride, int64_t r0, int64_t rn, int64_t d0, int64_t dn,
                 int width, float* dst);

// Provides packed panels of one operand. `rows` means m for A and n for B; `depth` is k.
class PanelSource {
 public:
  virtual ~PanelSource() = default;
  // Returns panels for rows [r0, r0+rn) (r0 a multiple of width) and depth [d0, d0+dn). `scratch` holds at
  // least ceil(rn/width)*width*dn floats for sources that pack on the fly. *panel_stride = distance in floats
  // between consecutive panels of the result.
  virtual const float* panels(int64_t r0, int64_t rn, int64_t d0, int64_t dn, int width, float* scratch,
                              int64_t* panel_stride) const = 0;
  // B operands only: if the source can be read in place, returns base such that element(r0 + j, d0 + d) =
  // base[offsets[d] + j] for any j < rn (reads past rn must stay inside the source), and sets *offsets.
  virtual const float* in_place(int64_t /*r0*/, int64_t /*d0*/, const int64_t** /*offsets*/) const { return nullptr; }
};

// An operand packed once over its whole depth.
class PrepackedPanels final : public PanelSource {
 public:
  PrepackedPanels() = default;
  // Packs element(r, d) = src[r*r_stride + d*d_stride], r < rows, d < depth.
  void pack(const float* src, int64_t r_stride, int64_t d_stride, int64_t rows, int64_t depth, int width);
  const float* panels(int64_t r0, int64_t rn, int64_t d0, int64_t dn, int width, float* scratch,
                      int64_t* panel_stride) const override;
  int64_t rows() const { return rows_; }
  int64_t depth() const { return depth_; }

 private:
  AlignedBuffer data_;
  int64_t rows_ = 0, depth_ = 0;
  int width_ = 0;
};

// Panels packed elsewhere over the whole depth (width-wide, depth-major, one after another), read in place.
class PackedView final : public PanelSource {
 public:
  PackedView(const float* data, int64_t depth, int width) : data_(data), depth_(depth), width_(width) {}
  const float* panels(int64_t r0, int64_t, int64_t d0, int64_t, int, float*, int64_t* panel_stride) const override {
    *panel_stride = depth_ * width_;
    return data_ + (r0 / width_) * depth_ * width_ + d0 * width_;
  }

 private:
  const float* data_;
  int64_t depth_;
  int width_;
};

// An operand read from a strided matrix and packed block by block.
class StridedPanels final : public PanelSource {
 public:
  StridedPanels(const float* src, int64_t r_stride, int64_t d_stride) : src_(src), rs_(r_stride), ds_(d_stride) {}
  const float* panels(int64_t r0, int64_t rn, int64_t d0, int64_t dn, int width, float* scratch,
                      int64_t* panel_stride) const override;

 private:
  const float* src_;
  int64_t rs_, ds_;
};

// Rows [offset, ...) of another source (offset a multiple of the panel width when that source is pre-packed).
class OffsetPanels final : public PanelSource {
 public:
  OffsetPanels(const PanelSource& src, int64_t row_offset) : src_(src), offset_(row_offset) {}
  const float* panels(int64_t r0, int64_t rn, int64_t d0, int64_t dn, int width, float* scratch,
                      int64_t* panel_stride) const override {
    return src_.panels(offset_ + r0, rn, d0, dn, width, scratch, panel_stride);
  }
  const float* in_place(int64_t r0, int64_t d0, const int64_t** offsets) const override {
    return src_.in_place(offset_ + r0, d0, offsets);
  }

 private:
  const PanelSource& src_;
  int64_t offset_;
};

struct GemmArgs {
  int64_t m = 0, n = 0, k = 0;
  const PanelSource* a = nullptr;  // rows m, depth k
  const PanelSource* b = nullptr;  // rows n, depth k
  float* c = nullptr;
  int64_t ldc = 0;
  float alpha = 1.0f;
  const float* row_bias = nullptr;  // m values added when !accumulate
  bool accumulate = false;          // add to the existing contents of C
  const ScratchPool* scratch = nullptr;  // required: where the packing buffers come from
  // C has room for whole vectors past n on every row (up to the next multiple of the kernel's vector width,
  // within nr): edge tiles are stored in place instead of through a tile buffer.
  bool c_has_room = false;
};

// Single-threaded blocked GEMM with kernel `uk`. Callers parallelize by splitting m / n into tasks.
void gemm(const MicroKernel& uk, const GemmArgs& args);

}  // namespace inq
