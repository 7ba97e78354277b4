// The kernels compiled for avx2 (flags set per file by setup.py). See kernels_impl.inc.
#define PYINFER_KERNEL_NS avx2
#define PYINFER_KERNEL_ISA Isa::AVX2
#include "kernels_impl.inc"
