// Runs independent tasks on onnxruntime's intra-op pool (OrtApi::KernelContext_ParallelFor) or serially.
#pragma once

#include <atomic>
#include <cstddef>
#include <exception>
#include <stdexcept>

namespace inq {

class TaskRunner {
 public:
  // Calls fn(usr, i) for every i < total, possibly concurrently, and returns when all calls are done.
  using ParallelForFn = void (*)(void* state, void (*fn)(void*, size_t), size_t total, void* usr);

  TaskRunner() = default;  // serial
  TaskRunner(ParallelForFn parallel_for, void* state) : parallel_for_(parallel_for), state_(state) {}

  // Runs f(i) for i < total. Exceptions inside tasks are caught on the worker thread and reported here as
  // one std::runtime_error after all tasks ended (never propagated through onnxruntime's pool).
  template <class F>
  void run(size_t total, const F& f) const {
    if (total == 0) return;
    if (!parallel_for_ || total == 1) {
      for (size_t i = 0; i < total; ++i) f(i);
      return;
    }
    Call<F> call{&f, {false}};
    parallel_for_(state_, &Call<F>::invoke, total, &call);
    if (call.failed.load()) throw std::runtime_error("a parallel task failed (out of memory?)");
  }

 private:
  template <class F>
  struct Call {
    const F* f;
    std::atomic<bool> failed;
    static void invoke(void* usr, size_t i) {
      auto* self = static_cast<Call*>(usr);
      try {
        (*self->f)(i);
      } catch (...) {
        self->failed.store(true);
      }
    }
  };

  ParallelForFn parallel_for_ = nullptr;
  void* state_ = nullptr;
};

}  // namespace inq
