"""Command line: ``fastloss info | demo | bench`` (also ``python -m fastloss ...``)."""
from __future__ import annotations

import argparse
import platform
import sys


def info() -> dict:
    """Versions, live backends, threads, and how the extension was built."""
    import numpy

    from . import __version__, _backend, _threads

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
        print(f"fastloss demo needs {', '.join(missing)}. Install them with:\n  "
              f"{demo.INSTALL_HINT}", file=sys.stderr)
        return 2
    result = demo.run(quick=args.quick, out_dir=args.out_dir)
    return 0 if result["agree"] else 1


def cmd_bench(args) -> int:
    from . import _threads, benchmark

    if args.threads:
        _threads.set_num_threads(args.threads)
    preset = benchmark.SIZES["quick" if args.quick else "full"]
    dtypes = args.dtypes.split(",")
    bandwidth = benchmark.measure_bandwidth(quick=args.quick)
    print("streaming bandwidth (GB/s, %d threads): %s" % (
        _threads.get_num_threads(), ", ".join(f"{k} {v:.1f}" for k, v in bandwidth.items())))
    cases = list(benchmark.all_cases(preset, dtypes, with_torch=not args.no_torch,
                                     kernels=args.kernels.split(",") if args.kernels else None))
    bar = _Progress(len(cases), "bench")
    try:
        rows = benchmark.run_cases(cases, bandwidth, min_rounds=3 if args.quick else 5,
                                   max_time=0.2 if args.quick else 1.0, progress=bar)
    finally:
        bar.close()
    print(benchmark.format_rows(rows))
    if args.json:
        benchmark.to_json(rows, bandwidth, info(), args.json)
        print(f"saved {args.json}")
    if args.plot:
        benchmark.plot_rows(rows, args.plot)
        print(f"plot: {args.plot}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fastloss", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, backends, threads, build flags")
    p = sub.add_parser("demo", help="train small models on scikit-learn's data sets")
    p.add_argument("--quick", action="store_true", help="a few seconds (what CI runs)")
    p.add_argument("--out-dir", default=".", help="where the PNG goes (default: .)")
    p = sub.add_parser("bench", help="sweep kernels x sizes x dtypes x backends")
    p.add_argument("--quick", action="store_true", help="small sizes, few rounds (CI)")
    p.add_argument("--dtypes", default="float32", help="comma-separated (default float32)")
    p.add_argument("--kernels", default="", help="comma-separated subset (default: all)")
    p.add_argument("--threads", type=int, default=0, help="thread count for every peer")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    p.add_argument("--json", metavar="FILE", help="save the results as JSON")
    p.add_argument("--plot", metavar="FILE", help="draw the speed-ups as a PNG")
    args = parser.parse_args(argv)
    if args.command == "info":
        for key, value in info().items():
            print(f"{key:>22}: {value}")
        return 0
    return {"demo": cmd_demo, "bench": cmd_bench}[args.command](args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
