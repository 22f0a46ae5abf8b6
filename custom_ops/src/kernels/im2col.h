// im2col fused with GEMM panel packing: B panels of a convolution read straight from the input image.
#pragma once

#include <cstdint>

#include "kernels/sgemm.h"

namespace inq {

// 2-D convolution geometry (a 1-D convolution is a 2-D one with h = kh = oh = 1).
struct ConvGeometry {
  int64_t n = 1, c = 1, h = 1, w = 1;  // input
  int64_t m = 1, group = 1;            // output channels, groups
  int64_t kh = 1, kw = 1;
  int64_t sh = 1, sw = 1, dh = 1, dw = 1;
  int64_t pad_t = 0, pad_l = 0, pad_b = 0, pad_r = 0;
  int64_t oh = 1, ow = 1;  // output

  int64_t cg() const { return c / group; }
  int64_t mg() const { return m / group; }
  int64_t kg() const { return cg() * kh * kw; }  // GEMM depth per group
  int64_t out_plane() const { return oh * ow; }
  int64_t in_plane() const { return h * w; }
};

// B operand of one (image, group): element(p, d) with p an output position (oh*OW + ow) and d = (c, ki, kj)
// is x[c][oh*sh - pad_t + ki*dh][ow*sw - pad_l + kj*dw], 0 outside the image.
class Im2colPanels final : public PanelSource {
 public:
  Im2colPanels(const float* x_group, const ConvGeometry& geo) : x_(x_group), g_(geo) {}
  const float* panels(int64_t r0, int64_t rn, int64_t d0, int64_t dn, int width, float* scratch,
                      int64_t* panel_stride) const override;

 private:
  const float* x_;
  const ConvGeometry& g_;
};

}  // namespace inq
