"""Command line: ``fastloss info | demo | bench`` (also ``python -m fastloss ...``)."""
from __future__ import annotations

import argparse
import importlib.util
import platform
import sys


def info() -> dict:
    """Versions, live backends, threads, how the extension was built, and the
instruction-set levels: built (simd_compiled), run by this CPU (simd_cpu), asked
for with FASTLOSS_SIMD (simd_requested), in use (simd_level)."""
    import numpy

    from .. import __version__, _backend, _threads

    out = {
        "fastloss": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": numpy.__version__,
        "backends": ["numpy"] + (["native"] if _backend.native_available() else []),
        "default_backend": _backend.get_backend(),
        "num_threads": _threads.get_num_threads(),
    }
    if _backend.native_available():
        out.update(_backend.simd_info())
        out.update({f"extension_{k}": v for k, v in _backend.kernels.build_info().items()})
    else:
        out["extension_error"] = _backend.native_error
    try:
        import numba

        out["numba"] = numba.__version__
        out["numba_threading_layer"] = numba.config.THREADING_LAYER
        try:
            out["numba_threading_layer"] = numba.threading_layer()
        except ValueError:
            pass  # no parallel kernel has run yet in this process
    except ImportError as exc:
        out["numba"] = f"not available ({exc})"
    return out


class _Progress:
    """tqdm when installed, else a one-line counter on stderr."""

    def __init__(self, total, desc):
        try:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="case")
        except ImportError:
            self._bar, self._n, self._total, self._desc = None, 0, total, desc

    def update(self, k=1):
        if self._bar is not None:
            self._bar.update(k)
        else:
            self._n += k
            print(f"\r{self._desc}: {self._n}/{self._total}", end="", file=sys.stderr,
                  flush=True)

    def close(self):
        if self._bar is not None:
            self._bar.close()
        else:
            print(file=sys.stderr)


def cmd_demo(args) -> int:
    from . import demo

    missing = demo.missing_extras()
    if missing:
        print(f"fastloss demo needs {', '.join(missing)}, not installed. Install with:\n"
              f"{demo.install_hint(missing)}", file=sys.stderr)
        return 2
    result = demo.run(quick=args.quick, out_dir=args.out_dir, threads=args.threads)
    return 0 if result["agree"] else 1


def _threads_text(n):
    return f"{n} thread{'s' if n != 1 else ''}"


def _busy_warning(threads):
    """A warning when other processes already keep the cores busy: a parallel kernel then
    waits for a core for each of its threads (a scheduler time slice, milliseconds)."""
    import os

    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not on this platform
        return ""
    if threads > 1 and load + threads > cores + 1:  # about a whole core already busy
        return (f"warning: load average {load:.1f} on {cores} cores before the benchmark: "
                f"kernels on {threads} threads will wait for free cores and time badly; "
                "measure on a quiet machine, or use --threads 1")
    return ""


def _simd_level_text(forced):
    """Use the forced level (``--simd``), if any; describe the level in use. None
    (after printing why) when the level cannot run here."""
    from .. import _backend

    if forced:
        try:
            _backend.set_simd_level(forced)
        except (RuntimeError, ValueError) as exc:
            print(f"fastloss bench --simd {forced}: {exc}", file=sys.stderr)
            return None
    if not _backend.native_available():
        return f"not available ({_backend.native_error}): NumPy backend"
    i = _backend.simd_info()
    how = "forced with --simd" if forced else (
        f"FASTLOSS_SIMD={i['simd_requested']}" if i["simd_requested"] != "auto" else "automatic")
    return (f"{i['simd_level']} level ({how}; built {', '.join(i['simd_compiled'])}; "
            f"this CPU runs {', '.join(i['simd_cpu'])})")


def cmd_bench(args) -> int:
    import datetime
    import os

    from .. import _backend, _threads
    from . import benchmark

    if args.plot and importlib.util.find_spec("matplotlib") is None:
        print("fastloss bench --plot needs matplotlib, not installed. Install with:\n"
              "  pip install matplotlib", file=sys.stderr)
        return 2
    if args.threads:
        _threads.set_num_threads(args.threads)
    level = _simd_level_text(args.simd)
    if level is None:
        return 2
    name = "tiny" if args.tiny else "quick" if args.quick else "full"
    preset = benchmark.SIZES[name]
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    kernels = [k.strip() for k in args.kernels.split(",") if k.strip()] or None
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if models and kernels is None:
        kernels = []  # --models alone: only the models
    try:  # cases are built one at a time as the sweep reaches them
        total = benchmark.count_cases(preset, dtypes, kernels, models)
        cases = benchmark.all_cases(preset, dtypes, with_torch=not args.no_torch,
                                    kernels=kernels, models=models)
    except ValueError as exc:
        print(f"fastloss bench: {exc}", file=sys.stderr)
        return 2
    threads = _threads.get_num_threads()
    busy = _busy_warning(threads)
    if busy:
        print(busy, file=sys.stderr)
    bandwidth = benchmark.measure_bandwidth(preset)
    print(f"streaming bandwidth ({_threads_text(bandwidth['threads'])}, best of the repeats): "
          f"triad {bandwidth['triad']:.1f} GB/s, in-place update {bandwidth['inplace']:.1f} GB/s")
    print(f"native kernels: {level}")
    bar = _Progress(total, f"bench ({name}, {_threads_text(threads)})")
    try:
        rows = benchmark.run_cases(cases, bandwidth, min_rounds=preset["rounds"],
                                   max_time=preset["max_time"], progress=bar)
    finally:
        bar.close()
    print(benchmark.format_rows(rows))
    print("x vs peer = peer time / native time (> 1: native is faster); every peer's result "
          "was checked against the NumPy reference before timing" +
          (" (models: against torch fused Adam)" if models else ""))
    if args.json:
        meta = {**info(), "preset": name, "dtypes": dtypes,
                "kernels": "all" if kernels is None else kernels, "models": models,
                "torch": not args.no_torch and benchmark._torch() is not None,
                "threads": threads,
                "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
                "busy_warning": busy or None,
                "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
                    timespec="seconds")}
        benchmark.to_json(rows, bandwidth, meta, args.json)
        print(f"results: {args.json}")
    if args.plot:
        benchmark.plot_rows(rows, args.plot, title="fastloss native speed-up, peer time / "
                            f"native time ({name} preset, {_threads_text(threads)}, "
                            f"{_backend.simd_level or 'no'} kernels)")
        print(f"plot: {args.plot}")
    return 0


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def main(argv=None) -> int:
    from .._backend import SIMD_LEVELS
    from .benchmark import KERNELS, MODELS

    parser = argparse.ArgumentParser(prog="fastloss", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, backends, threads, build flags")
    p = sub.add_parser("demo", help="train small models on scikit-learn's data sets")
    p.add_argument("--quick", action="store_true", help="a few seconds (what CI runs)")
    p.add_argument("--out-dir", default=".", help="where the PNG goes (default: .)")
    p.add_argument("--threads", type=_positive_int, default=1,
                   help="threads for fastloss and BLAS (default 1: the models are small)")
    p = sub.add_parser("bench", help="sweep kernels x sizes x dtypes x backends")
    p.add_argument("--quick", action="store_true", help="small sizes, few rounds (CI)")
    p.add_argument("--dtypes", default="float32",
                   help="comma-separated, among float32, float64 and bfloat16 "
                   "(bfloat16 needs ml_dtypes; default float32)")
    p.add_argument("--kernels", default="",
                   help=f"comma-separated subset of {','.join(KERNELS)} (default: all)")
    p.add_argument("--models", default="",
                   help=f"comma-separated subset of {','.join(MODELS)} or 'all': Adam "
                   "steps on whole models vs torch.optim.Adam(fused=True) (alone unless "
                   "--kernels is given too)")
    p.add_argument("--threads", type=_positive_int, default=0,
                   help="thread count for every peer (default: fastloss's setting)")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    p.add_argument("--simd", choices=SIMD_LEVELS, default=None,
                   help="run the native kernels of this instruction-set level (default: the "
                        "best this CPU runs, or FASTLOSS_SIMD)")
    p.add_argument("--json", metavar="FILE", help="save the results as JSON")
    p.add_argument("--plot", metavar="FILE", help="draw the speed-ups as a PNG")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # tests only
    args = parser.parse_args(argv)
    if args.command == "info":
        for key, value in info().items():
            print(f"{key:>22}: {value}")
        return 0
    return {"demo": cmd_demo, "bench": cmd_bench}[args.command](args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
