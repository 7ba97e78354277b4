"""pyinfer's thread pool (csrc/threads.cpp): parallel_for runs every item exactly once, on up to n threads whose ids
are distinct, with the workers taking part; in the caller alone when another thread holds the pool; and in a forked
child, which has none of its parent's workers.  Model outputs equal across thread counts: test_model, test_smollm."""
import threading

import numpy as np
import pytest

import pyinfer
from pyinfer import _ext
from subproc import run_py


@pytest.mark.parametrize("n_threads", [1, 2, 3, 8])
@pytest.mark.parametrize("n", [0, 1, 2, 3, 17, 1000])
def test_every_item_runs_once(n, n_threads):
    tids, visits = _ext.pool_probe(n, n_threads)
    assert np.all(visits == 1)
    assert np.all((tids >= 0) & (tids < n_threads))


def test_workers_take_part():
    # 64 items of 200 us: the caller alone would need 12.8 ms; a worker wakes within a fraction of that
    before = _ext.pool_stats()["worker_chunks"]
    tids, visits = _ext.pool_probe(64, 2, 200.0)
    assert np.all(visits == 1)
    assert set(tids.tolist()) == {0, 1}
    assert _ext.pool_stats()["worker_chunks"] > before


def test_more_threads_than_cores():
    tids, visits = _ext.pool_probe(500, 16, 20.0)
    assert np.all(visits == 1)
    assert tids.max() < 16


def test_callers_in_several_threads():
    # one caller holds the pool at a time; the others run their jobs alone: every job still runs every item once
    bad = []

    def caller():
        for _ in range(50):
            tids, visits = _ext.pool_probe(300, 2, 2.0)
            if not np.all(visits == 1):
                bad.append(visits)

    threads = [threading.Thread(target=caller) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad


FORK_CHILD = """
import os, sys, numpy as np
from pyinfer import _ext
_ext.pool_probe(64, 2, 50.0)  # the parent's pool has its worker
pid = os.fork()
if pid == 0:
    tids, visits = _ext.pool_probe(64, 2, 200.0)
    os._exit(0 if np.all(visits == 1) and set(tids.tolist()) == {0, 1} else 3)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""


def test_forked_child_gets_its_own_workers():
    rc, out, err = run_py(["-c", FORK_CHILD], timeout=60)  # a child waiting on its parent's workers would hang
    assert rc == 0, err
    assert out.strip() == "0"


def test_spin_time_reported_and_set_by_the_environment():
    assert "spin 100 us" in pyinfer.build_info()["threads"] or "PYINFER_SPIN_US" in __import__("os").environ
    rc, out, err = run_py(["-c", "import os; os.environ['PYINFER_SPIN_US'] = '7'; import pyinfer; "
                                 "print(pyinfer.build_info()['threads'])"])
    assert rc == 0, err
    assert "spin 7 us" in out
