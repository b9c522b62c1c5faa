"""fastloss.num_threads(): a per-thread (per-context) override of set_num_threads; the
spin count of fastloss's idle OpenMP threads."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastloss
from fastloss import _threads


@pytest.fixture(autouse=True)
def _restore_global():
    before = fastloss.get_num_threads()
    yield
    fastloss.set_num_threads(before)


def test_non_lifo_exit_in_one_thread():
    fastloss.set_num_threads(3)
    a, b = fastloss.num_threads(1), fastloss.num_threads(2)
    a.__enter__()
    b.__enter__()
    assert fastloss.get_num_threads() == 2
    a.__exit__(None, None, None)            # the outer block ends first
    assert fastloss.get_num_threads() == 2  # the inner one is still open
    b.__exit__(None, None, None)
    assert fastloss.get_num_threads() == 3


def test_blocks_in_two_threads_interleaved():
    """Thread A enters, B enters, A leaves, B leaves (and the reverse): each
    thread sees its own value inside its block, the global setting after."""
    fastloss.set_num_threads(3)
    for order in (("a", "b", "a", "b"), ("a", "b", "b", "a")):
        steps = {name: [threading.Event() for _ in range(2)] for name in "ab"}
        done = {name: [threading.Event() for _ in range(2)] for name in "ab"}
        seen, errors = {}, []

        def worker(name, n):
            try:
                steps[name][0].wait(5)
                with fastloss.num_threads(n):
                    seen[name + "-in"] = fastloss.get_num_threads()
                    done[name][0].set()
                    steps[name][1].wait(5)
                    seen[name + "-late"] = fastloss.get_num_threads()
                seen[name + "-out"] = fastloss.get_num_threads()
                done[name][1].set()
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=("a", 1)),
                   threading.Thread(target=worker, args=("b", 2))]
        for t in threads:
            t.start()
        count = {"a": 0, "b": 0}
        for name in order:
            steps[name][count[name]].set()
            assert done[name][count[name]].wait(5)
            count[name] += 1
        for t in threads:
            t.join(5)
        assert not errors
        assert seen == {"a-in": 1, "a-late": 1, "a-out": 3, "b-in": 2, "b-late": 2, "b-out": 3}
        assert fastloss.get_num_threads() == 3


def test_override_is_per_thread_and_set_num_threads_is_global():
    fastloss.set_num_threads(2)
    seen = []
    with fastloss.num_threads(1):
        t = threading.Thread(target=lambda: seen.append(fastloss.get_num_threads()))
        t.start()
        t.join()
        assert fastloss.get_num_threads() == 1
        fastloss.set_num_threads(3)           # the process-wide default ...
        assert fastloss.get_num_threads() == 1  # ... does not override an open block
    assert seen == [2]
    assert fastloss.get_num_threads() == 3


def test_many_threads_hammering_the_context():
    fastloss.set_num_threads(4)
    errors = []
    barrier = threading.Barrier(4)

    def worker(k):
        barrier.wait()
        for i in range(300):
            n = 1 + (k + i) % 3
            with fastloss.num_threads(n):
                if fastloss.get_num_threads() != n:
                    errors.append((k, i))
                fastloss.mse(np.ones(8), np.zeros(8))
            if fastloss.get_num_threads() != 4:
                errors.append((k, i, "after"))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert fastloss.get_num_threads() == 4


def test_bad_values():
    with pytest.raises(TypeError, match="num_threads"):
        fastloss.num_threads(1.5)
    with pytest.raises(ValueError, match="num_threads"):
        fastloss.num_threads(0)
    assert _threads.numba_threads() >= 1


def test_asyncio_tasks_keep_their_own_value():
    import asyncio

    fastloss.set_num_threads(3)

    async def task(n, gate, seen):
        with fastloss.num_threads(n):
            await gate.wait()  # the other task runs its block meanwhile
            seen.append((n, fastloss.get_num_threads()))

    async def main():
        gate, seen = asyncio.Event(), []
        jobs = [asyncio.create_task(task(n, gate, seen)) for n in (1, 2)]
        await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(*jobs)
        return seen

    assert sorted(asyncio.run(main())) == [(1, 1), (2, 2)]
    assert fastloss.get_num_threads() == 3


def _fresh_import(**env):
    """stdout, stderr of a fresh `import fastloss` (libgomp printing its settings)."""
    root = os.path.dirname(os.path.dirname(fastloss.__file__))
    base = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    code = "import os, fastloss; print(os.environ.get('GOMP_SPINCOUNT'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=root,
                         env={**base, "PYTHONPATH": root, "OMP_DISPLAY_ENV": "verbose", **env})
    assert out.returncode == 0, out.stderr
    return out.stdout.strip(), out.stderr


def test_openmp_spin_count_reaches_libgomp_and_leaves_the_environment():
    """fastloss's libgomp gets GOMP_SPINCOUNT = OMP_SPIN_COUNT (set while the first kernel
    module loads: libgomp reads it then), and the environment is as it was after the
    import (other OpenMP runtimes loaded later do not see it); a user's GOMP_SPINCOUNT or
    OMP_WAIT_POLICY is left alone."""
    from fastloss import _backend
    env_after, err = _fresh_import()
    assert env_after == "None"
    if "GOMP_SPINCOUNT" in err:  # libgomp (GCC's OpenMP) printed its settings
        assert f"GOMP_SPINCOUNT = '{_backend.OMP_SPIN_COUNT}'" in err
    env_after, err = _fresh_import(GOMP_SPINCOUNT="555")
    assert env_after == "555"
    if "GOMP_SPINCOUNT" in err:
        assert "GOMP_SPINCOUNT = '555'" in err
    env_after, err = _fresh_import(OMP_WAIT_POLICY="active")
    assert env_after == "None"
    if "GOMP_SPINCOUNT" in err:
        assert f"GOMP_SPINCOUNT = '{_backend.OMP_SPIN_COUNT}'" not in err
