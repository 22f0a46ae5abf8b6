// The scratch pool's buffers (kernels/scratch.h).
#include "kernels/scratch.h"

#include <algorithm>
#include <cstdlib>
#include <new>

#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#define INQ_HAVE_MMAP 1
#endif

namespace inq {

class ScratchPool::Buffers {
 public:
  ~Buffers() {
    for (auto& b : free_) std::free(b.first);
  }

  Lease acquire(size_t bytes) {
    bytes = (std::max<size_t>(bytes, 64) + 63) / 64 * 64;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!free_.empty()) {
        // Best fit; if nothing fits, replace the largest buffer (never more buffers than users at once).
        auto best = free_.end(), largest = free_.begin();
        for (auto it = free_.begin(); it != free_.end(); ++it) {
          if (it->second >= bytes && (best == free_.end() || it->second < best->second)) best = it;
          if (it->second > largest->second) largest = it;
        }
        if (best != free_.end()) {
          const auto buf = *best;
          free_.erase(best);
          return Lease(this, buf.first, buf.second);
        }
        std::free(largest->first);
        free_.erase(largest);
      }
    }
    void* p = std::aligned_alloc(64, bytes);
    if (!p) throw std::bad_alloc();
    return Lease(this, p, bytes);
  }

  void give_back(void* p, size_t n) noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    try {
      free_.emplace_back(p, n);
    } catch (...) {
      std::free(p);
    }
  }

 private:
  std::mutex mu_;
  std::vector<std::pair<void*, size_t>> free_;
};

ScratchPool::ScratchPool() {
  // The buffers of the live pools: created with the first pool, freed with the last.
  static std::mutex mu;
  static std::weak_ptr<Buffers> live;
  std::lock_guard<std::mutex> lock(mu);
  buffers_ = live.lock();
  if (!buffers_) {
    buffers_ = std::make_shared<Buffers>();
    live = buffers_;
  }
}

ScratchPool::Lease ScratchPool::acquire(size_t bytes) const { return buffers_->acquire(bytes); }

ScratchPool::Lease::~Lease() {
  if (owner_) owner_->give_back(p_, n_);
}

void* map_zeroed(size_t bytes) {
  if (bytes == 0) return nullptr;
#if defined(INQ_HAVE_MMAP)
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
#else
  void* p = std::calloc(bytes, 1);  // no mapping API: the heap, as a vector would
  if (!p) throw std::bad_alloc();
#endif
  return p;
}

void unmap(void* p, size_t bytes) {
  if (!p) return;
#if defined(INQ_HAVE_MMAP)
  munmap(p, bytes);
#else
  (void)bytes;
  std::free(p);
#endif
}

}  // namespace inq
