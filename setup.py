# Builds pyinfer's one private extension, pyinfer._ext, from csrc/ with pybind11 (no CMake).
# Kernel files named *_avx2.cpp / *_avx512.cpp get their ISA's flags and nothing else does; the ISA is chosen at
# run time.  Threads are pyinfer's own pool (csrc/threads.cpp), not OpenMP.  PYINFER_NATIVE=1 opts in to
# -march=native (never the default).
import os
import platform
import subprocess
import sys
import tempfile
from glob import glob

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext
from setuptools import setup

ParallelCompile("PYINFER_BUILD_JOBS", default=0).install()

IS_X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")
ISA_FLAGS = {
    "_ref.cpp": ["-fno-tree-vectorize"],  # the scalar twins stay scalar: they are the spec
    "_avx2.cpp": ["-mavx2", "-mfma", "-mf16c"],
    "_avx512.cpp": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512vnni", "-mfma", "-mf16c"],
}
COMMON = ["-O3", "-ffp-contract=off", "-fvisibility=hidden", "-Wall", "-pthread"]
# PYINFER_SANITIZE=1: AddressSanitizer + UndefinedBehaviorSanitizer (.ci/sanitize runs the tests under it; python
# must then run with the ASan runtime preloaded). -O1 keeps the build and the run fast enough for CI; any UB report
# aborts (no recovery), so a report cannot scroll by unnoticed.
SANITIZE = os.environ.get("PYINFER_SANITIZE") == "1"
SANITIZE_FLAGS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g"]
if SANITIZE:
    COMMON = ["-O1" if f == "-O3" else f for f in COMMON] + SANITIZE_FLAGS


def compiles(compiler_cmd, flags, code="int main(){return 0;}\n"):
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "t.cpp")
        with open(src, "w") as f:
            f.write(code)
        r = subprocess.run([*compiler_cmd, *flags, src, "-o", os.path.join(d, "t")], capture_output=True)
        return r.returncode == 0


class BuildExt(build_ext):
    def build_extensions(self):
        cxx = self.compiler.compiler_so[:1]
        isas = {"_ref.cpp"}
        if IS_X86:
            for suffix in ("_avx2.cpp", "_avx512.cpp"):
                if compiles(cxx, ISA_FLAGS[suffix] + ["-c"]):
                    isas.add(suffix)
        native = os.environ.get("PYINFER_NATIVE") == "1"
        for ext in self.extensions:
            ext.sources = [s for s in ext.sources if not any(s.endswith(x) for x in ISA_FLAGS) or
                           any(s.endswith(x) for x in isas)]
            ext.extra_compile_args = COMMON + (["-march=native"] if native else [])
            ext.extra_link_args = ["-pthread"] + (SANITIZE_FLAGS if SANITIZE else [])
            ext.define_macros += [("PYINFER_HAVE_AVX2", "1")] if "_avx2.cpp" in isas else []
            ext.define_macros += [("PYINFER_HAVE_AVX512", "1")] if "_avx512.cpp" in isas else []
        print(f"pyinfer: kernels: {sorted(isas)}"
              f"{'; ASan + UBSan' if SANITIZE else ''}", file=sys.stderr)

        original = self.compiler._compile

        def compile_one(obj, src, ext, cc_args, extra_postargs, pp_opts):
            extra = [f for suffix, flags in ISA_FLAGS.items() if src.endswith(suffix) for f in flags]
            return original(obj, src, ext, cc_args, list(extra_postargs) + extra, pp_opts)

        self.compiler._compile = compile_one
        super().build_extensions()


ext = Pybind11Extension(
    "pyinfer._ext",
    sorted(glob("csrc/**/*.cpp", recursive=True)),
    # headers and the kernel bodies that *_ref/_avx2/_avx512.cpp include: an edit to one rebuilds the extension
    depends=sorted(glob("csrc/**/*.h", recursive=True) + glob("csrc/**/*.inc", recursive=True)),
    cxx_std=17,
)

setup(ext_modules=[ext], cmdclass={"build_ext": BuildExt})
