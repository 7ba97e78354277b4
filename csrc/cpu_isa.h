// Which instruction set the kernels run with: probed once from the CPU, overridable with PYINFER_ISA.
// The kernel table for the chosen ISA lives in kernels/kernels.h; this file only decides.
#pragma once
#include <string>
#include <vector>

namespace pyinfer {

enum class Isa : int { REF = 0, AVX2 = 1, AVX512 = 2 };

const char* isa_name(Isa isa);
bool isa_compiled(Isa isa);      // was this ISA's kernel file built into the extension?
bool isa_cpu_supports(Isa isa);  // can this CPU (and OS) run it?
std::vector<Isa> isa_available();  // compiled and supported, in increasing order
// The ISA in use: PYINFER_ISA if set (throws std::runtime_error if unknown or unsupported), else the best.
Isa isa_selected();
// Parse a name ("ref", "avx2", "avx512"); throws std::invalid_argument naming the choices.
Isa isa_from_name(const std::string& name);

}  // namespace pyinfer
