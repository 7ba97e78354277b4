"""Running pyinfer as a user does, in a subprocess: `python ARGS` / `python -m pyinfer.cli ARGS` with the same
pyinfer this test process imported (the installed package, never the source tree), and the check that a failure is
one `error:` line with no traceback."""
import os
import subprocess
import sys

import pyinfer


def pyinfer_root():
    """The folder from which this process imported pyinfer (the installed package's parent)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(pyinfer.__file__)))


def run_py(args, timeout=300):
    """(exit code, stdout, stderr) of `python ARGS` using the same pyinfer as this process."""
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    env["PYTHONPATH"] = os.pathsep.join([pyinfer_root()] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    r = subprocess.run([sys.executable, *map(str, args)], capture_output=True, env=env, timeout=timeout)
    # bytes -> str by hand: text=True would turn a generated "\r" into "\n"
    return r.returncode, r.stdout.decode("utf-8"), r.stderr.decode("utf-8")


def run_cli(*args, timeout=300):
    """(exit code, stdout, stderr) of `python -m pyinfer.cli ARGS`."""
    return run_py(["-m", "pyinfer.cli", *args], timeout=timeout)


def assert_one_line_error(rc, out, err, expect_rc=None):
    """A failed command: exit code rc != 0 (or == expect_rc), nothing on stdout, one `error: ...` line on stderr
    and no traceback. Returns that line."""
    assert rc != 0 if expect_rc is None else rc == expect_rc, (rc, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert out == ""
    return lines[0]
