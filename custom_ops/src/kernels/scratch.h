// Scratch memory of the kernels: reusable 64-byte aligned buffers shared by every live node of the library, so
// that consecutive layers reuse the same (cache-warm) buffers, the total is bounded by the buffers in use at
// once, and everything is freed when the last node (the last session using the library) goes. No thread_local
// caches.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace inq {

// A handle on the shared buffers: a lease returns its buffer to them; they keep at most as many buffers as were
// in use at once (best fit, else the largest is replaced) and are freed with the last handle.
class ScratchPool {
 public:
  ScratchPool();
  ScratchPool(const ScratchPool&) = delete;
  ScratchPool& operator=(const ScratchPool&) = delete;

  class Buffers;
  class Lease {
   public:
    Lease(Buffers* owner, void* p, size_t n) : owner_(owner), p_(p), n_(n) {}
    Lease(Lease&& o) noexcept : owner_(o.owner_), p_(o.p_), n_(o.n_) { o.owner_ = nullptr; }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    Lease& operator=(Lease&&) = delete;
    ~Lease();
    template <class T>
    T* as() const { return static_cast<T*>(p_); }

   private:
    Buffers* owner_;
    void* p_;
    size_t n_;
  };
  Lease acquire(size_t bytes) const;  // throws std::bad_alloc

 private:
  std::shared_ptr<Buffers> buffers_;
};

// A large temporary array (weights being prepared): mapped from the OS and returned to it when freed, so that
// it leaves no hole in the heap that the session's long-lived buffers would keep resident. Zero-filled.
template <class T>
class TemporaryArray {
 public:
  explicit TemporaryArray(size_t count);
  ~TemporaryArray();
  TemporaryArray(const TemporaryArray&) = delete;
  TemporaryArray& operator=(const TemporaryArray&) = delete;
  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t size() const { return count_; }

 private:
  T* data_ = nullptr;
  size_t count_ = 0, bytes_ = 0;
};

void* map_zeroed(size_t bytes);  // throws std::bad_alloc
void unmap(void* p, size_t bytes);

template <class T>
TemporaryArray<T>::TemporaryArray(size_t count)
    : data_(static_cast<T*>(map_zeroed(count * sizeof(T)))), count_(count), bytes_(count * sizeof(T)) {}
template <class T>
TemporaryArray<T>::~TemporaryArray() {
  unmap(data_, bytes_);
}

}  // namespace inq
