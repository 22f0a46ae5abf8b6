// Integer weight panels shared by QConvWeights and QGemmWeights (levels as exact s8, with the +128 route), the
// block runner both drivers use; scratch comes from a pool owned by the weights (kernels/scratch.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "kernels/qkernels.h"
#include "kernels/scratch.h"

namespace inq {

// Main rows [row0, row0 + rows) of one group plus the correction rows of those rows, in `panels` panels of kQMR.
struct QBlock {
  int64_t row0 = 0, rows = 0, panels = 0;
  int64_t offset = 0;                               // bytes into the panel data
  std::vector<std::pair<int32_t, int32_t>> corr;    // (correction row, main row), both block-local
  // Sparse corrections (kernels with sparse_add): main row (block-local) and its entries [begin, end) of
  // sparse_kq / sparse_w4 (depth quad, s8 x 4 weights 0/1).
  struct Sparse { int32_t row, begin, end; };
  std::vector<Sparse> sparse;
  std::vector<int32_t> sparse_kq;
  std::vector<uint32_t> sparse_w4;
};

class QPackedWeights {
 public:
  static constexpr int64_t kBlockRows = 64;  // main rows per block: the m-split unit of the drivers

  // levels: groups*rows rows of `depth` integers in [-128, 128], each already in the kernel's depth order
  // (depth quad kq holds depth values 4kq..4kq+3); unit: groups*rows scales. A row with +128 and no -128 is
  // stored negated; a row with both stores +128 as 127 plus a correction (1 where the level is +128) whose sum
  // is added to it: a correction row in the panels, or, when the +128 fall in few depth quads and the kernels
  // have sparse_add, a sparse pass over those quads only (negated rows flip the sign of their difference back
  // in the epilogue, see QRowEpilogue). Returns "" or an error.
  std::string pack(const QKernels& k, int64_t groups, int64_t rows, int64_t depth, const int16_t* levels,
                   const float* unit);

  const QKernels& kernels() const { return *k_; }
  int64_t kqn() const { return kqn_; }
  int64_t blocks_per_group() const { return bpg_; }
  const QBlock& block(int64_t group, int64_t b) const { return blocks_[static_cast<size_t>(group * bpg_ + b)]; }
  const int8_t* panels(const QBlock& b) const { return data_.data() + b.offset; }
  int32_t rowsum(int64_t row) const { return rowsum_[static_cast<size_t>(row)]; }  // row = group*rows + r
  float unit(int64_t row) const { return unit_[static_cast<size_t>(row)]; }
  bool negated(int64_t row) const { return negated_[static_cast<size_t>(row)] != 0; }
  int64_t correction_rows() const { return corrections_; }  // rows holding both +128 and -128
  int64_t dense_correction_rows() const { return dense_corrections_; }  // of those, the ones with panel rows
  const ScratchPool& pool() const { return *pool_; }

  // acc[e*ldc + j] (ldc = ncols, a multiple of kQCols) for every row e of `b`, corrections added into their
  // main rows; column j reads quads at act[boff[kq] + 4*j].
  // Only the first `valid` columns (default: all) are needed: with the kernels' tile_tail, the others past the
  // last full kQCols group are not computed (left unset).
  // With `out` (rows: the block's main rows, e / y / y8 / z8 indexed by block row, columns from `col`): where the
  // kernels have tile_epilogue and the block has no corrections, the full kQCols groups of the first `valid`
  // columns go through the epilogue in registers and straight to their outputs; acc then holds only the
  // remaining columns. Returns the number of leading columns finished that way (0 without `out`).
  int64_t run_block(const QBlock& b, const uint8_t* act, const int64_t* boff, int64_t ncols, int32_t* acc,
                    int64_t valid = -1, const QTileOutput* out = nullptr, int64_t col = 0) const;

 private:
  const QKernels* k_ = nullptr;
  int64_t kqn_ = 0, bpg_ = 0, corrections_ = 0, dense_corrections_ = 0;
  std::vector<QBlock> blocks_;
  std::vector<int8_t> data_;
  std::vector<int32_t> rowsum_;
  std::vector<float> unit_;
  std::vector<uint8_t> negated_;
  std::unique_ptr<ScratchPool> pool_ = std::make_unique<ScratchPool>();
};

}  // namespace inq
