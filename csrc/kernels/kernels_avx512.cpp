// The kernels compiled for avx512 (flags set per file by setup.py). See kernels_impl.inc.
#define PYINFER_KERNEL_NS avx512
#define PYINFER_KERNEL_ISA Isa::AVX512
#include "kernels_impl.inc"
