"""The OpenMP wait policy pyinfer sets for itself (passive: threads sleep at barriers instead of spinning, so -t 2
does not collapse beside a busy process) and that the caller's environment wins and is left as it was."""
import os

from subproc import run_py

PROBE = ("import os, pyinfer; print(pyinfer.build_info()['omp_wait_policy']); "
         "print(os.environ.get('OMP_WAIT_POLICY'))")


def _clean_env():
    return {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}


def _probe(env, code=PROBE):
    old = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        rc, out, err = run_py(["-c", code])
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert rc == 0, err
    return out.splitlines()


def test_passive_wait_policy_set_for_the_import_only():
    policy, leaked = _probe(_clean_env())
    assert policy == "passive"
    assert leaked == "None"  # children of the process keep the caller's environment


def test_callers_wait_policy_wins():
    policy, kept = _probe(dict(_clean_env(), OMP_WAIT_POLICY="active"))
    assert policy.startswith("from the environment")
    assert kept == "active"


def test_openmp_loaded_first_is_reported():
    (policy,) = _probe(_clean_env(), "import torch, pyinfer; print(pyinfer.build_info()['omp_wait_policy'])")
    # torch brings its own libgomp: pyinfer cannot change its policy any more and says how to
    assert policy.startswith("OpenMP default") and "OMP_WAIT_POLICY=passive" in policy
