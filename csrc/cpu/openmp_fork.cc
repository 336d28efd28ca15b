#include "cpu/openmp_fork.h"

#if defined(_OPENMP) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 10
#define FUSEDRNN_RELEASE_GOMP_POOL 1
#include <omp.h>
#include <pthread.h>

#include <mutex>
#endif

namespace fusedrnn::cpu {

void release_openmp_threads_before_fork() {
#ifdef FUSEDRNN_RELEASE_GOMP_POOL
  static std::once_flag registered;
  std::call_once(registered, [] {
    // (A fork from inside a parallel region cannot release its pool; libgomp then returns -1.)
    pthread_atfork([] { omp_pause_resource_all(omp_pause_hard); }, nullptr, nullptr);
  });
#endif
}

}  // namespace fusedrnn::cpu
