// The kernels compiled for ref (flags set per file by setup.py). See kernels_impl.inc.
#define PYINFER_KERNEL_NS ref
#define PYINFER_KERNEL_ISA Isa::REF
#include "kernels_impl.inc"
