// Fingerprints of arrays, to tell that an input changed in place between a training forward and
// its backward (the backward would then silently use the new values with the old saved state).
#pragma once

#include <cstdint>

namespace fusedrnn::cpu {

// A 64-bit digest of `bytes` bytes at `data`, the same for the same bytes whatever the thread
// count or instruction set. Changing any single 32-bit word always changes it (each step of a
// lane's chain is a bijection of its accumulator); other changes collide with a probability of
// about 2^-32 or less. Not a cryptographic hash: it guards against mistakes, not adversaries.
// Runs on the OpenMP team for large arrays (it is bound by memory bandwidth).
uint64_t fingerprint(const void* data, int64_t bytes);

}  // namespace fusedrnn::cpu
