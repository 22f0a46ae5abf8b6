// GEMM driver: cache blocking over k (KC) and m (MC), packing, micro-kernel dispatch and edge tiles.
#include "kernels/sgemm.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "kernels/cpu_features.h"

namespace inq {

// Defined in sgemm_generic.cc / sgemm_avx2.cc / sgemm_avx512.cc.
extern const MicroKernel kGenericKernel;
#if defined(INQ_HAVE_X86_KERNELS)
extern const MicroKernel kAvx2Kernel;
extern const MicroKernel kAvx512Kernel;
#endif

namespace {
constexpr int64_t kKc = 192;  // depth block: an nr x KC B panel stays in L1/L2
constexpr int64_t kMc = 192;  // row block of A kept in L2
}  // namespace

const MicroKernel& active_kernel() {
  static const MicroKernel* k = [] {
#if defined(INQ_HAVE_X86_KERNELS)
    switch (detected_isa()) {
      case Isa::kAvx512: return &kAvx512Kernel;
      case Isa::kAvx2: return &kAvx2Kernel;
      default: break;
    }
#endif
    return &kGenericKernel;
  }();
  return *k;
}

const MicroKernel* kernel_by_name(const char* name) {
  if (std::strcmp(name, "generic") == 0) return &kGenericKernel;
#if defined(INQ_HAVE_X86_KERNELS)
  const Isa isa = detected_isa();
  if (std::strcmp(name, "avx2") == 0 && isa >= Isa::kAvx2) return &kAvx2Kernel;
  if (std::strcmp(name, "avx512") == 0 && isa >= Isa::kAvx512) return &kAvx512Kernel;
#endif
  return nullptr;
}

void AlignedBuffer::Free::operator()(float* p) const { std::free(p); }

void AlignedBuffer::resize(size_t count) {
  if (count == size_ && data_) return;
  data_.reset();
  size_ = 0;
  if (count == 0) return;
  if (count > (SIZE_MAX - 64) / sizeof(float)) throw std::bad_alloc();  // byte count would wrap
  const size_t bytes = (count * sizeof(float) + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, bytes);
  if (!p) throw std::bad_alloc();
  data_.reset(static_cast<float*>(p));
  size_ = count;
}

void pack_panels(const float* src, int64_t r_stride, int64_t d_stride, int64_t r0, int64_t rn, int64_t d0, int64_t dn,
                 int width, float* dst) {
  for (int64_t p = 0; p < rn; p += width, dst += dn * width) {
    const int64_t w = std::min<int64_t>(width, rn - p);
    const float* base = src + (r0 + p) * r_stride + d0 * d_stride;
    if (r_stride == 1) {  // panel rows are contiguous in the source
      for (int64_t d = 0; d < dn; ++d) {
        const float* s = base + d * d_stride;
        float* o = dst + d * width;
        for (int64_t i = 0; i < w; ++i) o[i] = s[i];
        for (int64_t i = w; i < width; ++i) o[i] = 0.0f;
      }
    } else {
      for (int64_t i = 0; i < w; ++i) {
        const float* s = base + i * r_stride;
        float* o = dst + i;
        if (d_stride == 1) {
          for (int64_t d = 0; d < dn; ++d) o[d * width] = s[d];
        } else {
          for (int64_t d = 0; d < dn; ++d) o[d * width] = s[d * d_stride];
        }
      }
      for (int64_t i = w; i < width; ++i)
        for (int64_t d = 0; d < dn; ++d) dst[d * width + i] = 0.0f;
    }
  }
}

void PrepackedPanels::pack(const float* src, int64_t r_stride, int64_t d_stride, int64_t rows, int64_t depth,
                           int width) {
  rows_ = rows;
  depth_ = depth;
  width_ = width;
  const int64_t npanels = (rows + width - 1) / width;
  data_.resize(static_cast<size_t>(std::max<int64_t>(1, npanels * width * depth)));
  pack_panels(src, r_stride, d_stride, 0, rows, 0, depth, width, data_.data());
}

const float* PrepackedPanels::panels(int64_t r0, int64_t, int64_t d0, int64_t, int, float*,
                                     int64_t* panel_stride) const {
  *panel_stride = depth_ * width_;
  return data_.data() + (r0 / width_) * depth_ * width_ + d0 * width_;
}

const float* StridedPanels::panels(int64_t r0, int64_t rn, int64_t d0, int64_t dn, int width, float* scratch,
                                   int64_t* panel_stride) const {
  pack_panels(src_, rs_, ds_, r0, rn, d0, dn, width, scratch);
  *panel_stride = dn * width;
  return scratch;
}

void gemm(const MicroKernel& uk, const GemmArgs& g) {
  const int mr = uk.mr, nr = uk.nr;
  if (g.m <= 0 || g.n <= 0) return;
  if (g.k <= 0) {  // empty sum: C = init
    for (int64_t i = 0; i < g.m; ++i) {
      float* row = g.c + i * g.ldc;
      if (!g.accumulate)
        for (int64_t j = 0; j < g.n; ++j) row[j] = g.row_bias ? g.row_bias[i] : 0.0f;
    }
    return;
  }
  // Blocks of k of similar size, each at most KC.
  const int64_t kblocks = (g.k + kKc - 1) / kKc;
  const int64_t kc_max = (g.k + kblocks - 1) / kblocks;
  const int64_t mc_max = std::max<int64_t>(mr, kMc / mr * mr);
  const int64_t npan_b = (g.n + nr - 1) / nr;
  const int64_t* probe = nullptr;
  // One lease for the B block (unless B is read in place), the A block and the edge tile.
  const size_t b_floats = g.b->in_place(0, 0, &probe) ? 0 : static_cast<size_t>(npan_b * nr * kc_max);
  const size_t a_floats = static_cast<size_t>((mc_max / mr + 1) * mr * kc_max), tile_floats = mr * nr;
  const ScratchPool::Lease lease = g.scratch->acquire((b_floats + a_floats + tile_floats) * sizeof(float) + 128);
  float* scratch_a = lease.as<float>();
  float* tile = scratch_a + (a_floats + 15) / 16 * 16;
  float* scratch_b = b_floats ? tile + (tile_floats + 15) / 16 * 16 : nullptr;

  for (int64_t pc = 0; pc < g.k; pc += kc_max) {
    const int64_t kc = std::min(kc_max, g.k - pc);
    const bool acc = g.accumulate || pc > 0;
    int64_t bstride = 0;
    const int64_t* boffs = nullptr;
    const float* bp = g.b->in_place(0, pc, &boffs);
    if (bp) bstride = nr;  // panel jr/nr starts jr columns further
    else bp = g.b->panels(0, g.n, pc, kc, nr, scratch_b, &bstride);
    for (int64_t ic = 0; ic < g.m; ic += mc_max) {
      const int64_t mc = std::min(mc_max, g.m - ic);
      int64_t astride = 0;
      const float* ap = g.a->panels(ic, mc, pc, kc, mr, scratch_a, &astride);
      for (int64_t jr = 0; jr < g.n; jr += nr) {
        const int64_t nw = std::min<int64_t>(nr, g.n - jr);
        const float* bpan = bp + (jr / nr) * bstride;
        for (int64_t ir = 0; ir < mc; ir += mr) {
          const int64_t mw = std::min<int64_t>(mr, mc - ir);
          const float* apan = ap + (ir / mr) * astride;
          float* cptr = g.c + (ic + ir) * g.ldc + jr;
          const float* bias = (!acc && g.row_bias) ? g.row_bias + ic + ir : nullptr;
          if (mw == mr && nw == nr) {
            uk.fn(kc, apan, bpan, boffs, cptr, g.ldc, g.alpha, bias, acc ? 1 : 0);
          } else if (g.c_has_room && uk.vector > 0) {
            uk.for_tile(mw, nw)(kc, apan, bpan, boffs, cptr, g.ldc, g.alpha, bias, acc ? 1 : 0);
          } else {
            uk.for_tile(mw, nw)(kc, apan, bpan, boffs, tile, nr, g.alpha, nullptr, 0);
            for (int64_t i = 0; i < mw; ++i) {
              float* crow = cptr + i * g.ldc;
              const float* trow = tile + i * nr;
              const float init = bias ? bias[i] : 0.0f;
              if (acc) {
                for (int64_t j = 0; j < nw; ++j) crow[j] += trow[j];
              } else {
                for (int64_t j = 0; j < nw; ++j) crow[j] = init + trow[j];
              }
            }
          }
        }
      }
    }
  }
}

}  // namespace inq
