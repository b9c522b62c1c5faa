"""Record every public loss's outputs on fixed inputs, or check them bit for bit.

A refactor of the loss code must leave NumPy and native results bitwise as they
were. Record with the build before the change, check with the build after:

    python tools/record_outputs.py record /tmp/before.npz
    ... change, rebuild ...
    python tools/record_outputs.py check /tmp/before.npz

Every case runs on both backends (where the extension is built), float32 and
float64, each reduction, with and without sample/class weights, and with the
gradient; ``check`` prints each case that differs (or is missing) and exits 1.
"""
import sys
import zlib

import numpy as np

import fastloss as fl

ELEMENTWISE = {
    "mse": {}, "sse": {}, "mae": {}, "huber": {"delta": 0.7}, "smooth_l1": {"beta": 0.6},
    "quantile": {"q": 0.3}, "log_cosh": {}, "binary_cross_entropy": {"eps": 1e-6},
    "binary_cross_entropy_with_logits": {}, "hinge": {}, "squared_hinge": {},
}


def _inputs(rng, dtype, name, shape):
    x = (rng.normal(size=shape) * 2).astype(dtype)
    t = rng.normal(size=shape).astype(dtype)
    if name == "binary_cross_entropy":
        x = rng.random(shape).astype(dtype)
    if name in ("binary_cross_entropy", "binary_cross_entropy_with_logits"):
        t = rng.random(shape).astype(dtype)
    if name in ("hinge", "squared_hinge"):
        t = np.where(rng.random(shape) < 0.5, -1, 1).astype(dtype)
    x.reshape(-1)[:3] = [np.nan, np.inf, -np.inf] if name != "binary_cross_entropy" else x.reshape(-1)[:3]
    return x, t


def _seed(*key):
    return zlib.crc32(repr(key).encode())


def cases():
    """Yield (key, thunk) for every recorded call."""
    backends = ["numpy"] + (["native"] if fl.native_available() else [])
    for dtype in (np.float32, np.float64):
        dn = np.dtype(dtype).name
        for name, opts in ELEMENTWISE.items():
            for shape in ((7,), (300, 70), (100_003,)):
                rng = np.random.default_rng(_seed(name, dn, shape))
                x, t = _inputs(rng, dtype, name, shape)
                w = rng.random(shape).astype(dtype)
                for red in ("mean", "sum", "none"):
                    for weighted in (False, True):
                        for be in backends:
                            key = f"{name}|{dn}|{shape}|{red}|w{int(weighted)}|{be}"
                            yield key, (lambda f=getattr(fl, name), x=x, t=t, o=opts, r=red,
                                        sw=(w if weighted else None), b=be:
                                        f(x, t, reduction=r, sample_weight=sw, return_grad=True,
                                          backend=b, **o))
                if name == "binary_cross_entropy_with_logits":
                    pw = rng.random(shape[-1:]).astype(dtype) * 3
                    for be in backends:
                        yield f"{name}|{dn}|{shape}|pos_weight|{be}", (
                            lambda x=x, t=t, pw=pw, b=be: fl.binary_cross_entropy_with_logits(
                                x, t, pos_weight=pw, return_grad=True, backend=b))
        for N, C in ((5, 3), (64, 10), (33, 1000)):
            rng = np.random.default_rng(_seed("ce", dn, N, C))
            z = (rng.normal(size=(N, C)) * 3).astype(dtype)
            y = rng.integers(0, C, size=N)
            y[::7] = -100
            probs = rng.random((N, C)).astype(dtype)
            probs /= probs.sum(1, keepdims=True)
            cw = (rng.random(C) + 0.5).astype(dtype)
            go = rng.normal(size=(N, C)).astype(dtype)
            sm = fl.softmax(z, backend="numpy")
            for be in backends:
                base = f"{dn}|{N}x{C}|{be}"
                for red in ("mean", "sum", "none"):
                    for kw_name, kw in (("plain", {}), ("weight", {"weight": cw}),
                                        ("smooth", {"label_smoothing": 0.1}),
                                        ("zloss_cap", {"z_loss": 1e-3, "softcap": 5.0})):
                        yield f"cross_entropy|idx|{kw_name}|{red}|{base}", (
                            lambda z=z, y=y, kw=kw, r=red, b=be: fl.cross_entropy(
                                z, y, reduction=r, return_grad=True, backend=b, **kw))
                        yield f"cross_entropy|prob|{kw_name}|{red}|{base}", (
                            lambda z=z, p=probs, kw=kw, r=red, b=be: fl.cross_entropy(
                                z, p, reduction=r, return_grad=True, backend=b, **kw))
                    yield f"nll_loss|{red}|{base}", (
                        lambda z=z, y=y, r=red, b=be: fl.nll_loss(
                            fl.log_softmax(z, backend="numpy"), y, reduction=r,
                            return_grad=True, backend=b))
                    yield f"categorical_cross_entropy|{red}|{base}", (
                        lambda p=probs, y=np.abs(y) % C, r=red, b=be: fl.categorical_cross_entropy(
                            p, y, reduction=r, return_grad=True, backend=b))
                    yield f"multi_margin|{red}|{base}", (
                        lambda z=z, y=np.abs(y) % C, r=red, b=be: fl.multi_margin(
                            z, y, reduction=r, return_grad=True, backend=b))
                yield f"softmax|{base}", (lambda z=z, b=be: fl.softmax(z, backend=b))
                yield f"log_softmax|{base}", (lambda z=z, b=be: fl.log_softmax(z, backend=b))
                yield f"softmax_backward|{base}", (
                    lambda s=sm, g=go, b=be: fl.softmax_backward(s, g, backend=b))
                yield f"log_softmax_backward|{base}", (
                    lambda s=np.log(sm), g=go, b=be: fl.log_softmax_backward(s, g, backend=b))


def _flatten(result):
    parts = result if isinstance(result, tuple) else (result,)
    return [np.asarray(p) for p in parts]


def main(argv):
    if len(argv) != 3 or argv[1] not in ("record", "check"):
        print(__doc__)
        return 2
    mode, path = argv[1], argv[2]
    with fl.num_threads(2):
        got = {}
        for key, thunk in cases():
            for i, a in enumerate(_flatten(thunk())):
                got[f"{key}#{i}"] = a
    if mode == "record":
        np.savez_compressed(path, **got)
        print(f"recorded {len(got)} arrays to {path}")
        return 0
    ref = np.load(path)
    bad = [k for k in ref.files if k not in got or got[k].dtype != ref[k].dtype
           or got[k].shape != ref[k].shape
           or got[k].tobytes() != ref[k].tobytes()]
    for k in bad[:20]:
        print("differs:", k)
    print(f"checked {len(ref.files)} arrays: {len(bad)} differ")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
