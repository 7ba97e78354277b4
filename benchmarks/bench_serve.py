"""Aggregate generation speed of `pyinfer serve --parallel N` against llama-cpp-python's server
(`python -m llama_cpp.server`, which serves one request at a time) on the same GGUF file with the same threads:
C concurrent clients each send R completions of --max-tokens tokens (end-of-text banned by logit_bias, greedy), and
the table shows the completion tokens of all of them over the wall time (median of --repeats runs, the two
servers' runs interleaved so that machine noise hits both alike). Not a test; needs the server extras.

    python benchmarks/bench_serve.py                          # the default model, 1/2/4 clients, both servers
    python benchmarks/bench_serve.py -m model.gguf -t 4 --clients 1 2 4 8 --engines pyinfer
"""
import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

import pyinfer
from pyinfer.models import default_model_path

PROMPT = "Here is a long story about a lighthouse keeper and the sea. Once upon a time,"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(engine, model, threads, parallel, n_ctx, log):
    port = free_port()
    if engine == "pyinfer":
        cmd = [sys.executable, "-m", "pyinfer.cli", "serve", "-m", model, "--port", str(port), "-t", str(threads),
               "--parallel", str(parallel), "-c", str(n_ctx)]
    else:
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", model, "--port", str(port), "--n_threads",
               str(threads), "--n_threads_batch", str(threads), "--n_ctx", str(n_ctx), "--host", "127.0.0.1"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{engine} server exited; see {log.name}")
        try:
            if httpx.get(url + "/v1/models", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"{engine} server did not start; see {log.name}")


def run_clients(url, model_name, n_clients, n_requests, max_tokens, ban):
    body = {"model": model_name, "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0.0,
            "logit_bias": {str(t): -100 for t in ban}}

    def client(i):
        n = 0
        with httpx.Client(timeout=600) as c:
            for j in range(n_requests):
                r = c.post(url + "/v1/completions", json=dict(body, seed=i * 100 + j))
                r.raise_for_status()
                n += r.json()["usage"]["completion_tokens"]
        return n

    t0 = time.perf_counter()
    with ThreadPoolExecutor(n_clients) as ex:
        n_tok = sum(ex.map(client, range(n_clients)))
    return n_tok, time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", default=None, help="GGUF file (default: the default model)")
    ap.add_argument("-t", "--threads", type=int, default=os.cpu_count())
    ap.add_argument("--parallel", type=int, default=4, help="pyinfer's slots (default: 4)")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("-r", "--requests", type=int, default=2, help="requests per client (default: 2)")
    ap.add_argument("-n", "--max-tokens", type=int, default=64)
    ap.add_argument("--allow-eos", action="store_true",
                    help="no logit_bias against end-of-text (llama-cpp-python applies logit_bias in Python, per token)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved runs; the table shows medians (default: 3)")
    ap.add_argument("--engines", nargs="+", default=["pyinfer", "llama-cpp"], choices=["pyinfer", "llama-cpp"])
    args = ap.parse_args(argv)
    model = args.model or str(default_model_path())
    m = pyinfer.load(model, n_ctx=64)
    tok = m.tokenizer
    eog = (tok.eos_id, getattr(tok, "eot_id", None), 0, 2)  # SmolLM2: <|endoftext|> 0, <|im_end|> 2
    ban = [] if args.allow_eos else sorted({t for t in eog if t is not None and t < tok.n_vocab})
    del m
    results = {}
    procs, urls, names, logs = {}, {}, {}, []
    try:
        for engine in args.engines:  # both servers up at once (idle ones cost nothing); runs interleaved
            log = tempfile.NamedTemporaryFile("w", suffix=f"-{engine}.log", delete=False)
            logs.append(log)
            procs[engine], urls[engine] = start(engine, model, args.threads, args.parallel, 512, log)
            names[engine] = httpx.get(urls[engine] + "/v1/models").json()["data"][0]["id"]
            run_clients(urls[engine], names[engine], 1, 1, 8, ban)  # warm-up
        for rep in range(args.repeats):
            for c in args.clients:
                for engine in args.engines:
                    n, dt = run_clients(urls[engine], names[engine], c, args.requests, args.max_tokens, ban)
                    results.setdefault((engine, c), []).append(n / dt)
                    print(f"run {rep}: {engine:10s} clients {c}: {n} tokens in {dt:.2f} s = {n / dt:.1f} tok/s",
                          flush=True)
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(30)
        for log in logs:
            log.close()
    results = {k: statistics.median(v) for k, v in results.items()}
    print("\n| clients | " + " | ".join(f"{e} tok/s" for e in args.engines) +
          (" | pyinfer / llama-cpp |" if len(args.engines) == 2 else " |"))
    print("|---:|" + "---:|" * (len(args.engines) + (len(args.engines) == 2)))
    for c in args.clients:
        row = [f"{results[e, c]:.1f}" for e in args.engines]
        if len(args.engines) == 2:
            row.append(f"{results['pyinfer', c] / results['llama-cpp', c]:.2f}")
        print(f"| {c} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
