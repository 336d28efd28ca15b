// Keeps the kernels' OpenMP teams working in a process forked after they ran.
#pragma once

namespace fusedrnn::cpu {

// GNU OpenMP (libgomp) keeps each thread's pool of worker threads from one parallel region to the
// next. A process forked after a team ran inherits the pool's bookkeeping but not its threads, and
// its next team waits forever for workers that do not exist (GCC bug 60035): a multiprocessing
// worker forked from a process that had run a layer on two threads hung in its first call.
// This registers (once) a handler that releases the forking thread's pool just before each fork
// (OpenMP 5.0's omp_pause_resource_all, libgomp 10 and later), so that parent and child start
// new workers at their next team: tens of microseconds, once per fork. Builds without OpenMP, or
// with another runtime (LLVM's libomp starts afresh in a child by itself), need nothing.
void release_openmp_threads_before_fork();

}  // namespace fusedrnn::cpu
