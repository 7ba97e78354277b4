"""End to end, pyinfer against llama.cpp (through llama-cpp-python) on the same GGUF files with the same threads:
pp128 / pp512 (one eval call from an empty cache), tg128 (the full generate() path with the default sampler chain,
against create_completion with the same sampler settings) also as a fraction of the decode roofline (a plain read of
memory measured in the same run / the weight bytes a decode step reads), load time and peak RSS.  Not a test.
tg128@2000 decodes after 2000 cached positions (a prompt evaluated before the clock starts; both engines reuse it
and evaluate its last token), where attention reads the KV cache beside the weights: no roofline there.
Each engine runs in its own worker subprocess (so its load time and peak RSS are its own); the driver sends each
timed run to one worker then the other, interleaved, with --gap idle seconds before each (llama.cpp's threads poll
for work a while after a call returns: pyinfer's 2-thread prefill right after it ran ~13 % slower), and reports the
median of -r runs and pyinfer / llama.cpp.
--busy runs a spinning process beside the measurement (threads under load); --engines pyinfer,pyinfer-nospin compares
pyinfer's thread pool (workers spin briefly between jobs) with workers that sleep at once (PYINFER_SPIN_US=0).

    python benchmarks/bench_e2e.py                       # all files, 1 and 2 threads, a few minutes
    python benchmarks/bench_e2e.py --models smollm2 --busy -t 1 2
    python benchmarks/bench_e2e.py --models smollm2 --tests tg128@2000    # decode at depth
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# the default sampler chain of both engines (llama.cpp's defaults), given explicitly to both
SAMPLER = dict(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.0)
GPT2_124M = dict(n_layer=12, n_embd=768, n_head=12, n_positions=1024, vocab_size=50257)
MODELS = ("smollm2", "gpt2-q8_0", "gpt2-q4_0", "gemma3")


# ---------------------------------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------------------------------

def gpt2_files(cache: Path) -> dict:
    """{"gpt2-q8_0": path, "gpt2-q4_0": path}: a random GPT-2-124M (HF init, seed 0) through llama.cpp's converter
    (f32 and q8_0) and llama.cpp's own quantizer (q4_0 from the f32 file); made once into `cache`."""
    out = {"gpt2-q8_0": cache / "gpt2-124m-random-q8_0.gguf", "gpt2-q4_0": cache / "gpt2-124m-random-q4_0.gguf"}
    if all(p.exists() for p in out.values()):
        return out
    sys.path.insert(0, str(REPO / "tests"))
    sys.path.insert(0, str(REPO / "benchmarks"))
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    from assets import llama_cpp_convert
    from bench_gpt2 import write_checkpoint

    cache.mkdir(parents=True, exist_ok=True)
    folder = cache / "gpt2-124m-random-hf"
    if not (folder / "model.safetensors").exists():
        torch.manual_seed(0)
        write_checkpoint(GPT2LMHeadModel(GPT2Config(**GPT2_124M)).eval(), folder)
    f32 = cache / "gpt2-124m-random-f32.gguf"
    if not f32.exists():
        llama_cpp_convert(folder, f32, "f32")
    if not out["gpt2-q8_0"].exists():
        llama_cpp_convert(folder, out["gpt2-q8_0"], "q8_0")
    if not out["gpt2-q4_0"].exists():
        import llama_cpp
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0
        rc = llama_cpp.llama_model_quantize(str(f32).encode(), str(out["gpt2-q4_0"]).encode(), params)
        if rc != 0:
            raise RuntimeError(f"llama.cpp's quantizer failed ({rc}) on {f32}")
    return out


def model_path(name: str, cache: Path) -> Path:
    from pyinfer.models import default_model_path, named_model_path
    if name == "smollm2":
        return Path(default_model_path())
    if name == "gemma3":
        return Path(named_model_path("gemma3-270m"))
    return gpt2_files(cache)[name]


# ---------------------------------------------------------------------------------------------------------------------
# workers: one engine each, JSON lines on stdin/stdout
# ---------------------------------------------------------------------------------------------------------------------

def peak_rss_mb() -> float:
    """This process's peak resident memory since its exec (VmHWM). Not ru_maxrss: on Linux that keeps the high-water
    mark of the memory the process had before exec, i.e. of the forked driver (torch, when it made the GPT-2 files)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def decode_bytes(path) -> int:
    """Weight bytes a decode step reads: every matrix once, except an embedding table that is only gathered from (the
    token embedding when the file has its own output matrix; GPT-2's position embedding)."""
    from pyinfer import gguf_file
    tensors = {t.name: int(t.n_bytes) for t in gguf_file.read_gguf(path).tensors if len(t.shape) >= 2}
    skip = {"position_embd.weight"} | ({"token_embd.weight"} if "output.weight" in tensors else set())
    return sum(n for name, n in tensors.items() if name not in skip)


def warm_page_cache(path):
    """The file in the page cache, read afresh through read(): load time is then the engine's, not the disk's, and
    both engines map the same pages.  The page size they get depends on how the pages came into the cache (read()
    gives large folios, which map as 2 MiB pages; a first reader that faults through a plain mapping leaves 4 KiB
    ones, ~10 % slower to decode on SmolLM2 for both engines), so the cached copy is dropped first."""
    if hasattr(os, "posix_fadvise"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    Path(path).read_bytes()


def read_bandwidth(threads: int) -> float:
    """Bytes/s of a plain read of 512 MiB (from DRAM), this many threads, median of 10 passes (the C++ reference
    benchmarks/bench_kernels.py uses)."""
    import numpy as np
    from pyinfer import _ext
    buf = np.ones(512 * 2**20 // 8, np.uint64).view(np.uint8)
    times, _ = _ext.kernels.bench_stream_read(buf, n_threads=threads)
    return buf.nbytes / statistics.median(times)


def worker(engine: str, path: str, n_ctx: int):
    import numpy as np
    t0 = time.perf_counter()
    if engine.startswith("pyinfer"):
        import pyinfer
        m = pyinfer.load(path, n_ctx=n_ctx)
        n_vocab = m.n_vocab
    else:
        from llama_cpp import Llama
        m = Llama(model_path=path, n_ctx=n_ctx, n_batch=512, n_ubatch=512, verbose=False)
        n_vocab = m.n_vocab()
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    print(json.dumps({"load_s": load_s}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        th, n, depth = cmd["threads"], cmd["n"], cmd.get("depth", 0)
        ids = rng.integers(100, n_vocab - 100, size=n if cmd["op"] == "pp" else depth or 8).tolist()
        if engine.startswith("pyinfer"):
            m.n_threads = th
        else:
            m._ctx.set_n_threads(th, th)  # llama_set_n_threads on the context
        m.reset()
        if depth:  # the cached prompt, all but its last token (which generation evaluates for its logits)
            m.eval(ids[:-1])
        t0 = time.perf_counter()
        if cmd["op"] == "pp":
            m.eval(ids)
            n_done = n
        elif engine.startswith("pyinfer"):
            r = m.generate(ids, max_tokens=n, ignore_eos=True, seed=1, details=True, cache_prompt=bool(depth),
                           **SAMPLER)
            n_done = len(r.tokens)
        else:
            eos = m.token_eos()
            r = m.create_completion(ids, max_tokens=n, seed=1, logit_bias={eos: -1e9}, **SAMPLER)
            n_done = r["usage"]["completion_tokens"]
        dt = time.perf_counter() - t0
        print(json.dumps({"s": dt, "n": n_done}), flush=True)
    print(json.dumps({"rss_mb": peak_rss_mb()}), flush=True)


class Worker:
    def __init__(self, engine, path, n_ctx, env):
        if engine == "pyinfer-nospin":  # pool workers sleep as soon as a job is done
            env = dict(env, PYINFER_SPIN_US="0")
        self.p = subprocess.Popen([sys.executable, __file__, "--worker", engine, str(path), str(n_ctx)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.load_s = self._read()["load_s"]

    def _read(self):
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.p.args[3]} died (exit {self.p.wait()})")
        return json.loads(line)

    def run(self, op, n, threads, depth=0):
        self.p.stdin.write(json.dumps({"op": op, "n": n, "threads": threads, "depth": depth}) + "\n")
        self.p.stdin.flush()
        r = self._read()
        return r["n"] / r["s"]

    def close(self):
        self.p.stdin.write(json.dumps({"op": "quit"}) + "\n")
        self.p.stdin.flush()
        rss = self._read()["rss_mb"]
        self.p.wait()
        return rss


# ---------------------------------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated from {', '.join(MODELS)}")
    ap.add_argument("-t", "--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("-r", "--repeats", type=int, default=3, help="timed runs per cell, the median is shown")
    ap.add_argument("--tests", default="pp128,pp512,tg128", help="ppN, tgN or tgN@D (D cached positions first)")
    ap.add_argument("--busy", action="store_true", help="run a spinning process on one core beside the measurement")
    ap.add_argument("--engines", default="pyinfer,llama.cpp",
                    help="the two columns: pyinfer, llama.cpp or pyinfer-nospin (default: pyinfer,llama.cpp)")
    ap.add_argument("--gap", type=float, default=0.25, help="seconds idle before each timed run (default: 0.25)")
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/pyinfer-bench"), help="where GPT-2 files go")
    args = ap.parse_args(argv)
    tests = []  # (op, n, depth)
    for t in args.tests.split(","):
        op = t[:2]
        n, _, depth = t[2:].partition("@")
        if op not in ("pp", "tg") or not n.isdigit() or (depth and (op == "pp" or not depth.isdigit())):
            raise SystemExit(f"--tests: {t!r} is not ppN, tgN or tgN@D")
        tests.append((op, int(n), int(depth or 0)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    busy = None
    if args.busy:
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    engines = args.engines.split(",")
    if len(engines) != 2 or not set(engines) <= {"pyinfer", "llama.cpp", "pyinfer-nospin"}:
        raise SystemExit(f"--engines: two of pyinfer, llama.cpp, pyinfer-nospin, got {args.engines!r}")
    print(f"{engines[0]} vs {engines[1]} (llama.cpp = llama-cpp-python), tokens/s, median of {args.repeats} interleaved runs"
          + (", a busy process spinning on one core" if busy else "") + f"; load {os.getloadavg()[0]:.1f}")
    sys.path.insert(0, str(REPO))
    bw = {th: read_bandwidth(th) for th in args.threads}  # the decode roofline: bw / weight bytes per token
    print("read bandwidth: " + ", ".join(f"{bw[th] / 1e9:.1f} GB/s at {th} thread(s)" for th in args.threads))
    print(f"| model | threads | test | {engines[0]} | {engines[1]} | ratio | {engines[0]} / roofline |")
    print("|---|---:|---|---:|---:|---:|---:|")
    summary = []
    try:
        for name in args.models.split(","):
            path = model_path(name, Path(args.cache))
            warm_page_cache(path)
            n_ctx = max(n + d for _, n, d in tests) + 16
            per_token = decode_bytes(path)
            w = {e: Worker(e, path, n_ctx, env) for e in engines}
            for th in args.threads:
                for op, n, depth in tests:
                    for e in w.values():
                        e.run(op, min(n, 16), th)  # warm-up
                    rates = {e: [] for e in w}
                    for _ in range(args.repeats):
                        for e in w:
                            time.sleep(args.gap)  # the other engine's threads back asleep
                            rates[e].append(w[e].run(op, n, th, depth))
                    a, b = (statistics.median(rates[e]) for e in w)
                    roof = f"{a / (bw[th] / per_token):.2f}" if op == "tg" and not depth else ""
                    label = f"{op}{n}" + (f"@{depth}" if depth else "")
                    print(f"| {name} | {th} | {label} | {a:.1f} | {b:.1f} | {a / b:.2f} | {roof} |", flush=True)
            loads = {e: w[e].load_s for e in w}
            rss = {e: w[e].close() for e in w}
            a, b = engines
            summary.append(f"| {name} | {Path(path).stat().st_size / 2**20:.0f} | {loads[a]:.3f} | {loads[b]:.3f} | "
                           f"{rss[a]:.0f} | {rss[b]:.0f} |")
    finally:
        if busy:
            busy.kill()
    print(f"\n| model | file MiB | {engines[0]} load s | {engines[1]} load s | {engines[0]} peak RSS MiB | "
          f"{engines[1]} peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    print("\n".join(summary))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
