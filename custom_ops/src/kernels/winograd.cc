// Winograd F(2x2, 3x3) forward pass (kernels/winograd.h): blocks of tiles, each transformed in, multiplied by
// the 16 transformed kernels (GEMMs on the float micro-kernels) and transformed back with the epilogue.
#include "kernels/winograd.h"

#include <algorithm>
#include <cstdlib>
#include <thread>

#include "kernels/clones.h"
#include "kernels/winograd_tiles.h"  // the baseline build of the transforms

namespace inq {

namespace {

constexpr int kXi = 16;  // transformed positions per tile

// One zero-padded strip row (`width` columns, an even count) split into its even and odd columns.
INQ_CLONES
void split_columns(const float* __restrict padded, int64_t width, float* __restrict even, float* __restrict odd) {
  for (int64_t k = 0; k < width / 2; ++k) even[k] = padded[2 * k], odd[k] = padded[2 * k + 1];
}

}  // namespace

bool winograd_suits(const ConvGeometry& g) {
  static const bool off = std::getenv("INQ_ONNX_CONV") != nullptr;
  return !off && g.kh == 3 && g.kw == 3 && g.sh == 1 && g.sw == 1 && g.dh == 1 && g.dw == 1 && g.group == 1 &&
         g.oh % 2 == 0 && g.ow % 2 == 0 && g.oh * g.ow >= 144 && g.c >= 16 && g.m >= 16 &&
         g.in_plane() < (int64_t{1} << 31);
}

void winograd_prepare(const MicroKernel& uk, int64_t m, int64_t c, const float* dense, WinogradWeights* out) {
  // U = G g G^T with G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1], computed in double and rounded once.
  static const double G[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
  std::vector<float> u(static_cast<size_t>(kXi * m * c));
  for (int64_t i = 0; i < m * c; ++i) {
    const float* g = dense + i * 9;
    double t[4][3];  // G g
    for (int a = 0; a < 4; ++a)
      for (int j = 0; j < 3; ++j) t[a][j] = G[a][0] * g[j] + G[a][1] * g[3 + j] + G[a][2] * g[6 + j];
    for (int a = 0; a < 4; ++a)
      for (int b = 0; b < 4; ++b)
        u[static_cast<size_t>((4 * a + b) * m * c + i)] =
            static_cast<float>(t[a][0] * G[b][0] + t[a][1] * G[b][1] + t[a][2] * G[b][2]);
  }
  out->u.resize(kXi);
  for (int xi = 0; xi < kXi; ++xi) out->u[xi].pack(u.data() + xi * m * c, c, 1, m, c, uk.mr);
}

void conv_winograd(const ConvGeometry& g, const MicroKernel& uk, const WinogradWeights& w, const ScratchPool& pool,
                   const float* x, const Epilogue& ep, float* y, const TaskRunner& runner, int64_t threads_hint) {
  const int64_t c = g.c, m = g.m, nr = uk.nr;
  const int64_t tw = g.ow / 2, th = g.oh / 2, tiles = th * tw, plane = g.out_plane();
  // Blocks of whole 16-tile vectors, at most nr tiles (one B panel): only an image's last vector is partly
  // empty (196 tiles: 48 + 48 + 48 + 48 + 4, 208 columns computed; 49 tiles: 32 + 17).
  const int64_t vectors = (tiles + 15) / 16, per_panel = std::max<int64_t>(1, nr / 16);
  const int64_t fewest = (vectors + per_panel - 1) / per_panel;  // blocks of per_panel vectors
  const int64_t vpb = (vectors + fewest - 1) / fewest;            // the same count, as even as it gets
  const int64_t nblocks = (vectors + vpb - 1) / vpb, tb = 16 * vpb;
  // With a block for each hardware thread (up to 8 threads), each task takes a block: it transforms the block's
  // input and runs its GEMMs on it from its core's cache. ResNet-18 float, 2 threads: 1.17-1.19x FP32 at batch 1
  // and 1.12x at batch 8, against 1.09-1.10x and 1.06x with the shared pass below, whose second half reads
  // input transformed on the other core. With fewer blocks than threads (small planes on a larger machine), the
  // blocks' input is transformed in a pass of its own and shared, and each task then takes a part of the output
  // channels over all blocks, so that every thread has work.
  static const int64_t hardware =
      std::clamp<int64_t>(static_cast<int64_t>(std::thread::hardware_concurrency()), 1, 8);
  const int64_t threads = threads_hint > 0 ? threads_hint : hardware;
  const int64_t parts = g.n * nblocks >= threads ? 1 : std::max<int64_t>(1, std::min<int64_t>(8, m / 16));
  const int64_t panels = (m + uk.mr - 1) / uk.mr, mb = (panels + parts - 1) / parts * uk.mr;
  const int64_t mparts = (m + mb - 1) / mb;
  const int64_t wp = 2 * tw + 2;  // strip row: the tiles' columns, zero-padded
  const int64_t max_rows = 2 * ((tb + tw - 1) / tw + 1) + 2;  // input rows of the tile rows a block can span
  // The 16 positions' panels lie vs / ms floats apart: a multiple of 4 KB would put all 16 streams of the
  // transforms in one L1 set (64 and 128 channels x 48 tiles are), so one cache line more.
  const int64_t vs = c * nr + 16, ms = mb * nr + 16;
  const int64_t strip_floats = (c * max_rows * wp + 15) / 16 * 16 + wp + 16, v_floats = kXi * vs + 16;
  const int64_t m_floats = kXi * ms + 16;  // the slack: whole-vector reads past a block's last tile
  const WinogradTiles fns = uk.winograd.input ? uk.winograd : winograd_tiles();
  const WinogradOutputFn store = fns.output[ep.summand ? 1 : 0][ep.activation != Activation::kNone ? 1 : 0];
  const float lo = ep.lower(), hi = ep.upper();

  auto tile_range = [&](int64_t blk, int64_t* t0, int64_t* t1) {
    *t0 = blk * tb, *t1 = std::min(tiles, *t0 + tb);
  };
  // Runs of tiles of [t0, t1) within one tile row: f(tile row, first column, count, first block column).
  auto for_runs = [&](int64_t t0, int64_t t1, auto&& f) {
    for (int64_t t = t0; t < t1;) {
      const int64_t ty = t / tw, tx = t % tw, len = std::min(t1 - t, tw - tx);
      f(ty, tx, len, t - t0);
      t += len;
    }
  };

  // V = B^T d B of one block's tiles into v (16 panels of c x nr, vs apart); `strip` holds strip_floats.
  auto transform = [&](int64_t img, int64_t blk, float* strip, float* v) {
    int64_t t0 = 0, t1 = 0;
    tile_range(blk, &t0, &t1);
    // The input rows of the block's tile rows, zero-padded (strip row i is input row ih0 + i, column u is input
    // column u - pad_l), each stored as its even columns, then its odd columns.
    const int64_t ty0 = t0 / tw, ty1 = (t1 - 1) / tw;
    const int64_t ih0 = 2 * ty0 - g.pad_t, rows = 2 * (ty1 - ty0) + 4;
    const int64_t u0 = std::clamp<int64_t>(g.pad_l, 0, wp), u1 = std::clamp<int64_t>(g.pad_l + g.w, u0, wp);
    const float* ximg = x + img * c * g.in_plane();
    float* padded = strip + (c * max_rows * wp + 15) / 16 * 16;  // one zero-padded row before it is split
    std::fill(padded, padded + wp, 0.0f);
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t r = 0; r < rows; ++r) {
        float* row = strip + (ch * rows + r) * wp;
        const int64_t ih = ih0 + r;
        if (ih < 0 || ih >= g.h) {
          std::fill(row, row + wp, 0.0f);
          continue;
        }
        const float* src = ximg + (ch * g.h + ih) * g.w + (u0 - g.pad_l);  // input column of strip column u0
        std::copy(src, src + (u1 - u0), padded + u0);
        split_columns(padded, wp, row, row + wp / 2);
      }
    const int64_t n_tiles = t1 - t0;
    for (int64_t ch = 0; ch < c; ++ch) {
      for_runs(t0, t1, [&](int64_t ty, int64_t tx, int64_t len, int64_t j) {
        const float* first = strip + (ch * rows + 2 * (ty - ty0)) * wp + tx;
        const float* e[4] = {first, first + wp, first + 2 * wp, first + 3 * wp};
        const float* o[4] = {e[0] + wp / 2, e[1] + wp / 2, e[2] + wp / 2, e[3] + wp / 2};
        fns.input(e, o, len, nr - j, v + ch * nr + j, vs);
      });
      // Columns up to the block's last whole vector are read by the kernels (and dropped): keep them finite.
      for (int p = 0; p < kXi; ++p)
        for (int64_t j = n_tiles; j < (n_tiles + 15) / 16 * 16; ++j) v[p * vs + ch * nr + j] = 0.0f;
    }
  };

  // M[p] (output channels [m0, m0 + mn) of one block) = U[p] V[p], into mo + p * ms.
  auto multiply = [&](int64_t blk, int64_t part, int p, const float* v, float* mo) {
    int64_t t0 = 0, t1 = 0;
    tile_range(blk, &t0, &t1);
    const int64_t m0 = part * mb;
    const OffsetPanels a(w.u[static_cast<size_t>(p)], m0);
    const PackedView b(v + p * vs, c, static_cast<int>(nr));
    GemmArgs args;
    args.scratch = &pool;
    args.m = std::min(mb, m - m0), args.n = t1 - t0, args.k = c;
    args.a = &a, args.b = &b;
    args.c = mo + p * ms, args.ldc = nr;
    args.c_has_room = true;  // rows of nr columns
    gemm(uk, args);
  };
  // Y = A^T M A of one block and part with the epilogue, into the output.
  auto finish = [&](int64_t img, int64_t blk, int64_t part, const float* mo) {
    int64_t t0 = 0, t1 = 0;
    tile_range(blk, &t0, &t1);
    const int64_t m0 = part * mb, mn = std::min(mb, m - m0);
    for (int64_t mm = 0; mm < mn; ++mm) {
      const int64_t ch = m0 + mm;
      const float bias = ep.bias ? ep.bias[ch] : 0.0f;
      float* yc = y + (img * m + ch) * plane;
      const float* zc = ep.summand ? ep.summand + (img * m + ch) * plane : nullptr;
      for_runs(t0, t1, [&](int64_t ty, int64_t tx, int64_t len, int64_t j) {
        const int64_t at = 2 * ty * g.ow + 2 * tx;
        store(mo + mm * nr + j, ms, len, bias, zc ? zc + at : nullptr, zc ? zc + at + g.ow : nullptr, lo, hi,
              yc + at, yc + at + g.ow);
      });
    }
  };

  auto floats = [&](int64_t n) { return pool.acquire(static_cast<size_t>(n) * sizeof(float)); };
  if (mparts == 1) {
    runner.run(static_cast<size_t>(g.n * nblocks), [&](size_t task) {
      const int64_t img = static_cast<int64_t>(task) / nblocks, blk = static_cast<int64_t>(task) % nblocks;
      const ScratchPool::Lease lease = floats(strip_floats + v_floats + m_floats);
      float* v = lease.as<float>() + strip_floats;
      transform(img, blk, lease.as<float>(), v);
      for (int p = 0; p < kXi; ++p) multiply(blk, 0, p, v, v + v_floats);
      finish(img, blk, 0, v + v_floats);
    });
    return;
  }
  // Several images per pass (their transformed input up to about 4 MB), so that a batch reads each transformed
  // kernel part once per pass rather than once per image.
  const int64_t per_pass = std::max<int64_t>(1, std::min(g.n, (int64_t{1} << 20) / (nblocks * v_floats)));
  const ScratchPool::Lease shared = floats(per_pass * nblocks * v_floats);
  const float* v = shared.as<float>();
  for (int64_t img0 = 0; img0 < g.n; img0 += per_pass) {
    const int64_t units = std::min(per_pass, g.n - img0) * nblocks;  // (image, block) pairs of this pass
    runner.run(static_cast<size_t>(units), [&](size_t u) {
      const ScratchPool::Lease lease = floats(strip_floats);
      const int64_t i = static_cast<int64_t>(u);
      transform(img0 + i / nblocks, i % nblocks, lease.as<float>(), shared.as<float>() + i * v_floats);
    });
    runner.run(static_cast<size_t>(mparts), [&](size_t part) {
      const ScratchPool::Lease lease = floats(units * m_floats);
      float* mo = lease.as<float>();
      for (int p = 0; p < kXi; ++p)  // each transformed kernel part over the whole pass while it is in cache
        for (int64_t i = 0; i < units; ++i)
          multiply(i % nblocks, static_cast<int64_t>(part), p, v + i * v_floats, mo + i * m_floats);
      for (int64_t i = 0; i < units; ++i)
        finish(img0 + i / nblocks, i % nblocks, static_cast<int64_t>(part), mo + i * m_floats);
    });
  }
}

}  // namespace inq
