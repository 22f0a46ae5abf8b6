// Scratch memory of the kernels: reusable 64-byte aligned buffers owned by the weights of one session node, so
// that they are bounded by the node's concurrent users and released with the session (no thread_local caches).
#pragma once

#include <cstddef>
#include <mutex>
#include <utility>
#include <vector>

namespace inq {

// Reusable 64-byte aligned buffers: a lease returns its buffer to the pool, which keeps at most as many as were
// in use at once (best fit, else the largest is replaced) and frees them all with itself.
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

}  // namespace inq
