// Weight packing for the integer kernels.
#include "kernels/qpack.h"

#include <algorithm>
#include <new>

namespace inq {

std::string QPackedWeights::pack(const QKernels& k, int64_t groups, int64_t rows, int64_t depth,
                                 const int16_t* levels, const float* unit) {
  // |acc| <= 255 * 128 * depth must fit int32.
  if (depth > (int64_t{2147483647} / (255 * 128)))
    return "integer mode: weight depth " + std::to_string(depth) + " is too large for int32 accumulation";
  k_ = &k;
  kqn_ = (depth + 3) / 4;
  bpg_ = (rows + kBlockRows - 1) / kBlockRows;
  corrections_ = 0;
  dense_corrections_ = 0;
  blocks_.assign(static_cast<size_t>(groups * bpg_), QBlock());
  rowsum_.assign(static_cast<size_t>(groups * rows), 0);
  unit_.assign(unit, unit + groups * rows);
  negated_.assign(static_cast<size_t>(groups * rows), 0);
  data_.clear();
  const int64_t kd = kqn_ * 4;
  std::vector<int8_t> eff;  // block's effective rows, kd values each
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t bi = 0; bi < bpg_; ++bi) {
      QBlock& b = blocks_[static_cast<size_t>(g * bpg_ + bi)];
      b.row0 = bi * kBlockRows;
      b.rows = std::min(kBlockRows, rows - b.row0);
      eff.assign(static_cast<size_t>(b.rows * kd), 0);
      std::vector<int8_t> extra;
      for (int64_t r = 0; r < b.rows; ++r) {
        const int64_t row = g * rows + b.row0 + r;
        const int16_t* l = levels + row * depth;
        bool pos = false, neg = false;
        for (int64_t d = 0; d < depth; ++d) {
          if (l[d] < -128 || l[d] > 128)
            return "integer mode: weight level " + std::to_string(l[d]) + " (output channel " +
                   std::to_string(row) + ") is outside [-128, 128]";
          pos |= l[d] == 128;
          neg |= l[d] == -128;
        }
        const int sign = pos && !neg ? -1 : 1;
        negated_[static_cast<size_t>(row)] = sign < 0;
        int32_t sum = 0;
        int8_t* e = eff.data() + r * kd;
        for (int64_t d = 0; d < depth; ++d) {
          const int v = sign * l[d];
          sum += v;
          e[d] = static_cast<int8_t>(std::min(v, 127));
        }
        rowsum_[static_cast<size_t>(row)] = sum;
        if (pos && neg && k.sparse_add) {
          // Sparse when the +128 fall in few depth quads: one vpdpbusd-like step per such quad and column
          // group (plus the accumulator's load/store), against kqn / kQMR for a correction row's share of a panel.
          int64_t quads = 0;
          for (int64_t kq = 0; kq < kqn_; ++kq) {
            bool any = false;
            for (int64_t d = kq * 4; d < std::min(depth, kq * 4 + 4); ++d) any |= l[d] == 128;
            quads += any;
          }
          if (kQMR * (quads + 2) <= kqn_) {
            QBlock::Sparse sp{static_cast<int32_t>(r), static_cast<int32_t>(b.sparse_kq.size()), 0};
            for (int64_t kq = 0; kq < kqn_; ++kq) {
              uint32_t w4 = 0;
              for (int64_t d = kq * 4; d < std::min(depth, kq * 4 + 4); ++d)
                if (l[d] == 128) w4 |= 1u << (8 * (d - kq * 4));
              if (!w4) continue;
              b.sparse_kq.push_back(static_cast<int32_t>(kq));
              b.sparse_w4.push_back(w4);
            }
            sp.end = static_cast<int32_t>(b.sparse_kq.size());
            b.sparse.push_back(sp);
            ++corrections_;
            continue;
          }
        }
        if (pos && neg) {
          const size_t at = extra.size();
          extra.resize(at + static_cast<size_t>(kd), 0);
          for (int64_t d = 0; d < depth; ++d) extra[at + static_cast<size_t>(d)] = l[d] == 128 ? 1 : 0;
          b.corr.emplace_back(static_cast<int32_t>(b.rows + static_cast<int64_t>(at) / kd), static_cast<int32_t>(r));
          ++corrections_;
          ++dense_corrections_;
        }
      }
      eff.insert(eff.end(), extra.begin(), extra.end());
      const int64_t n_eff = b.rows + static_cast<int64_t>(b.corr.size());
      b.panels = (n_eff + kQMR - 1) / kQMR;
      b.offset = static_cast<int64_t>(data_.size());
      data_.resize(data_.size() + static_cast<size_t>(b.panels * kqn_ * kQMR * k.wbytes), 0);
      int8_t* out = data_.data() + b.offset;
      for (int64_t e = 0; e < n_eff; ++e) {
        const int64_t p = e / kQMR, r = e % kQMR;
        const int8_t* src = eff.data() + e * kd;
        for (int64_t kq = 0; kq < kqn_; ++kq) {
          int8_t* dst = out + ((p * kqn_ + kq) * kQMR + r) * k.wbytes;
          const int8_t* s = src + kq * 4;
          if (k.wbytes == 4) {
            for (int i = 0; i < 4; ++i) dst[i] = s[i];
          } else {  // s16 pairs (w0, w2), (w1, w3)
            const int16_t w[4] = {s[0], s[2], s[1], s[3]};
            for (int i = 0; i < 4; ++i) {
              dst[2 * i] = static_cast<int8_t>(w[i] & 0xFF);
              dst[2 * i + 1] = static_cast<int8_t>((w[i] >> 8) & 0xFF);
            }
          }
        }
      }
    }
  return {};
}

int64_t QPackedWeights::run_block(const QBlock& b, const uint8_t* act, const int64_t* boff, int64_t ncols,
                                  int32_t* acc, int64_t valid, const QTileOutput* out, int64_t col) const {
  const int8_t* a = panels(b);
  const int64_t panel_bytes = kqn_ * kQMR * k_->wbytes;
  // Columns computed: all of them, or up to `valid` when the kernels have a tail tile.
  int64_t full = ncols, tail = 0;
  if (valid >= 0 && valid < ncols && k_->tile_tail) {
    full = valid / kQCols * kQCols;
    tail = valid - full;
  }
  int64_t done = 0;
  if (out && k_->tile_epilogue && b.corr.empty() && b.sparse.empty()) {
    // Fused: only columns that are wanted, in whole kQCols groups; the rest goes the acc way below.
    done = (valid >= 0 ? std::min(valid, ncols) : ncols) / kQCols * kQCols;
    // A lone column after whole chunks (the 49th of a 7x7 output) rides along with the last chunk's pass.
    const bool lone = tail == 1 && done > 0 && done % kQChunk == 0;
    for (int64_t j = 0; j < done; j += kQChunk) {
      const int64_t n = std::min<int64_t>(kQChunk, done - j);
      const bool with_tail = lone && j + n == done;
      for (int64_t p = 0; p < b.panels; ++p) {
        QTileOutput o = *out;
        o.rows = static_cast<int>(std::min<int64_t>(kQMR, b.rows - p * kQMR));
        o.e += p * kQMR;
        if (o.y) o.y += p * kQMR;
        if (o.y8) o.y8 += p * kQMR;
        if (o.z8) o.z8 += p * kQMR;
        k_->tile_epilogue(kqn_, a + p * panel_bytes, act + 4 * j, boff, o, col + j, n,
                          with_tail ? acc + p * kQMR * ncols + done : nullptr, ncols);
      }
    }
    full -= done;  // what the acc way still computes: the full groups past `done` (no tail tile), or none
    if (lone) tail = 0;
  }
  // Column chunks outer: one chunk of activations stays in L1 while every panel of the block passes over it.
  for (int64_t j = done; j < done + full; j += kQChunk) {
    const int64_t n = std::min<int64_t>(kQChunk, done + full - j);
    for (int64_t p = 0; p < b.panels; ++p)
      k_->tile(kqn_, a + p * panel_bytes, act + 4 * j, boff, acc + p * kQMR * ncols + j, ncols, n);
  }
  if (tail > 0)
    for (int64_t p = 0; p < b.panels; ++p)
      k_->tile_tail(kqn_, a + p * panel_bytes, act + 4 * (done + full), boff, acc + p * kQMR * ncols + done + full,
                    ncols, tail);
  const int64_t used = done + full + tail;
  for (const auto& c : b.corr) {
    const int32_t* s = acc + c.first * ncols;
    int32_t* d = acc + c.second * ncols;
    for (int64_t j = 0; j < used; ++j) d[j] += s[j];
  }
  for (const auto& s : b.sparse)
    k_->sparse_add(b.sparse_kq.data() + s.begin, b.sparse_w4.data() + s.begin, s.end - s.begin, act, boff,
                   acc + static_cast<int64_t>(s.row) * ncols, used);
  return done;
}

}  // namespace inq
