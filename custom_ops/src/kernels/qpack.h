// Integer weight panels shared by QConvWeights and QGemmWeights (levels as exact s8, with the +128 route), the
// block runner both drivers use, and a bounded scratch pool owned by the weights.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "kernels/qkernels.h"

namespace inq {

// Reusable 64-byte aligned buffers: one per concurrent user at most, each grown to the largest request, all
// freed with the pool (that is, with the weights of one session node).
class ScratchPool {
 public:
  ScratchPool() = default;
  ScratchPool(const ScratchPool&) = delete;
  ScratchPool& operator=(const ScratchPool&) = delete;
  ~ScratchPool();

  class Lease {
   public:
    Lease(const ScratchPool* pool, void* p, size_t n) : pool_(pool), p_(p), n_(n) {}
    Lease(Lease&& o) noexcept : pool_(o.pool_), p_(o.p_), n_(o.n_) { o.pool_ = nullptr; }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    Lease& operator=(Lease&&) = delete;
    ~Lease() { if (pool_) pool_->give_back(p_, n_); }
    template <class T>
    T* as() const { return static_cast<T*>(p_); }

   private:
    const ScratchPool* pool_;
    void* p_;
    size_t n_;
  };
  Lease acquire(size_t bytes) const;  // throws std::bad_alloc

 private:
  void give_back(void* p, size_t n) const noexcept;
  mutable std::mutex mu_;
  mutable std::vector<std::pair<void*, size_t>> free_;
};

// Main rows [row0, row0 + rows) of one group plus the correction rows of those rows, in `panels` panels of kQMR.
struct QBlock {
  int64_t row0 = 0, rows = 0, panels = 0;
  int64_t offset = 0;                               // bytes into the panel data
  std::vector<std::pair<int32_t, int32_t>> corr;    // (correction row, main row), both block-local
};

class QPackedWeights {
 public:
  static constexpr int64_t kBlockRows = 64;  // main rows per block: the m-split unit of the drivers

  // levels: groups*rows rows of `depth` integers in [-128, 128], each already in the kernel's depth order
  // (depth quad kq holds depth values 4kq..4kq+3); unit: groups*rows scales. A row with +128 and no -128 is
  // stored negated; a row with both stores +128 as 127 plus a correction row (1 where
  // the level is +128) whose sum is added to it (negated rows flip the sign of their difference back in the
  // epilogue, see QRowEpilogue). Returns "" or an error.
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
  int64_t correction_rows() const { return corrections_; }
  const ScratchPool& pool() const { return *pool_; }

  // acc[e*ldc + j] (ldc = ncols, a multiple of kQCols) for every row e of `b`, corrections added into their
  // main rows; column j reads quads at act[boff[kq] + 4*j].
  // Only the first `valid` columns (default: all) are needed: with the kernels' tile_tail, the others past the
  // last full kQCols group are not computed (left unset).
  void run_block(const QBlock& b, const uint8_t* act, const int64_t* boff, int64_t ncols, int32_t* acc,
                 int64_t valid = -1) const;

 private:
  const QKernels* k_ = nullptr;
  int64_t kqn_ = 0, bpg_ = 0, corrections_ = 0;
  std::vector<QBlock> blocks_;
  std::vector<int8_t> data_;
  std::vector<int32_t> rowsum_;
  std::vector<float> unit_;
  std::vector<uint8_t> negated_;
  std::unique_ptr<ScratchPool> pool_ = std::make_unique<ScratchPool>();
};

}  // namespace inq
