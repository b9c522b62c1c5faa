"""Command line: ``fastloss info`` (also ``python -m fastloss info``)."""
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fastloss", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, backends, threads, build flags")
    args = parser.parse_args(argv)
    if args.command == "info":
        for key, value in info().items():
            print(f"{key:>22}: {value}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
