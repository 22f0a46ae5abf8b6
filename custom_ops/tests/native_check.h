// What the native test programs share: CHECK (counts checks and failures, prints each failure with its place)
// and a two-thread ParallelFor, as onnxruntime's pool calls it, for threaded runs of the kernels.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdio>
#include <thread>

static int g_checks = 0;
static int g_failures = 0;

#define CHECK(cond, ...)                                 \
  do {                                                   \
    ++g_checks;                                          \
    if (!(cond)) {                                       \
      ++g_failures;                                      \
      std::printf("FAIL %s:%d: ", __FILE__, __LINE__);   \
      std::printf(__VA_ARGS__);                          \
      std::printf("\n");                                 \
    }                                                    \
  } while (0)

[[maybe_unused]] static void parallel_for(void*, void (*fn)(void*, size_t), size_t total, void* usr) {
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i; (i = next.fetch_add(1)) < total;) fn(usr, i);
  };
  std::thread helper(work);
  work();
  helper.join();
}
