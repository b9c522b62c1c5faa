"""The common cross-entropy call's fast path (classification._cross_entropy_plain ->
kernels.cross_entropy_plain) and the few-class plain block (_ce_plain_block): the same
bits as the general path and the general few-class block, and the same errors."""
import numpy as np
import pytest

import fastloss
from fastloss import _backend

pytestmark = pytest.mark.skipif(not fastloss.native_available(), reason="native kernels")

GENERAL = {"label_smoothing": np.float64(0.0)}  # not a plain 0.0: takes the general path


def _same(a, b):
    """Bitwise equal (any NaN equals any NaN), same dtype and shape."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    na, nb = np.isnan(a), np.isnan(b)
    assert (na == nb).all()
    u = {4: np.uint32, 8: np.uint64}[a.dtype.itemsize]
    assert (a[~na].view(u) == b[~nb].view(u)).all()


def _logits(rng, N, C, dtype):
    x = (3 * rng.standard_normal((N, C))).astype(dtype)
    if N >= 6:
        x[1, 0] = np.nan
        x[2, :] = -np.inf             # a fully masked row: NaN
        x[3, -1] = np.inf
        x[4, :] = 0.0
        x[4, 0] = -0.0
        x[5, : C // 2] = -np.inf      # partly masked
    return x


def _labels(rng, N, C, ldtype):
    y = rng.integers(0, C, N)
    y[::7] = -100                     # ignored
    return y.astype(ldtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ldtype", [np.int32, np.int64])
@pytest.mark.parametrize("C", [1, 2, 10, 31, 32, 100])
@pytest.mark.parametrize("N", [1, 63, 65, 300])
def test_fast_path_matches_general_path_bitwise(rng, dtype, ldtype, C, N):
    x, y = _logits(rng, N, C, dtype), _labels(rng, N, C, ldtype)
    for nt in (1, 2):
        with fastloss.num_threads(nt):
            for red in ("mean", "sum"):
                lf, gf = fastloss.cross_entropy(x, y, reduction=red, return_grad=True)
                lg, gg = fastloss.cross_entropy(x, y, reduction=red, return_grad=True, **GENERAL)
                _same(lf, lg)
                _same(gf, gg)
                _same(fastloss.cross_entropy(x, y, reduction=red), lg)
                out = np.full_like(x, 7)
                lo, go = fastloss.cross_entropy(x, y, reduction=red, return_grad=True, out=out)
                assert go is out
                _same(lo, lg)
                _same(out, gg)
                xi = x.copy()       # out= the logits themselves: the gradient in place
                li, gi = fastloss.cross_entropy(xi, y, reduction=red, return_grad=True, out=xi)
                assert gi is xi
                _same(li, lg)
                _same(xi, gg)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("C", [1, 2, 3, 10, 17, 31])
def test_plain_block_matches_general_block_bitwise(rng, dtype, C):
    """Unit class weights take the general few-class block (_ce_block_stats and the row
    steps); no weights the transposed plain block: the same bits, also per row
    ('none', with a per-row grad_output) and for any thread count."""
    N = 200
    x, y = _logits(rng, N, C, dtype), _labels(rng, N, C, np.int64)
    ones = np.ones(C, dtype)
    go = np.linspace(-2, 2, N).astype(dtype)
    for nt in (1, 2):
        with fastloss.num_threads(nt):
            for red, g_out in (("mean", None), ("sum", None), ("none", go)):
                a = fastloss.cross_entropy(x, y, reduction=red, return_grad=True,
                                           grad_output=g_out)
                b = fastloss.cross_entropy(x, y, reduction=red, return_grad=True,
                                           grad_output=g_out, weight=ones)
                _same(a[0], b[0])
                _same(a[1], b[1])


def test_plain_block_handles_16bit_tiles(rng):
    """bfloat16 / float16 logits run the plain block on their float32 tiles: the same
    bits as the general block there too."""
    ml = pytest.importorskip("ml_dtypes")
    for dt in (np.dtype(ml.bfloat16), np.dtype(np.float16)):
        x, y = _logits(rng, 300, 10, np.float32).astype(dt), _labels(rng, 300, 10, np.int64)
        a = fastloss.cross_entropy(x, y, return_grad=True)
        b = fastloss.cross_entropy(x, y, return_grad=True, weight=np.ones(10, np.float32))
        _same(a[0].astype(np.float32), b[0].astype(np.float32))
        _same(a[1].astype(np.float32), b[1].astype(np.float32))


def _error(fn):
    with pytest.raises(Exception) as e:
        fn()
    return type(e.value), str(e.value)


def test_fast_path_errors_are_the_general_paths(rng):
    """Whatever the fast path does not take, the general path validates and raises,
    with the same type and message as when the fast path is not tried at all; a
    refused call leaves out= untouched."""
    x, y = _logits(rng, 20, 5, np.float32), _labels(rng, 20, 5, np.int64)
    bad = y.copy()
    bad[3] = 5
    calls = [
        dict(target=bad),                                      # label outside [0, C)
        dict(target=bad, out=np.zeros_like(x)),
        dict(target=np.full(20, -1)),                          # -1 is not ignore_index
        dict(target=y[:10]),                                   # wrong shape
        dict(target=y.astype(np.float32)),                     # float labels
        dict(target=y.astype(bool)),
        dict(out=np.zeros((20, 5), np.float64)),               # wrong dtype
        dict(out=np.zeros((5, 20), np.float32)),               # wrong shape
        dict(out=np.zeros((20, 10), np.float32)[:, ::2]),      # not contiguous
        dict(out=np.zeros_like(x), return_grad=False),
        dict(out=x[::-1]),                                     # overlaps logits, not equal
        dict(reduction="avg"),
        dict(ignore_index=2 ** 63),
        dict(backend="fast"),
        dict(return_grad=1),
    ]
    ro = np.zeros_like(x)
    ro.flags.writeable = False
    calls.append(dict(out=ro))
    y2 = np.zeros(20, np.int64)
    o2 = y2.view(np.float32).reshape(10, 4)                    # out overlapping the labels
    calls.append(dict(logits=np.zeros((10, 4), np.float32), target=y2[:10], out=o2))
    for kw in calls:
        kw = {"logits": x, "target": y, "return_grad": True, **kw}
        fast = _error(lambda: fastloss.cross_entropy(**kw))
        general = _error(lambda: fastloss.cross_entropy(**kw, **GENERAL))
        assert fast == general, kw
    out = np.full_like(x, 3.0)
    with pytest.raises(ValueError, match="class index 5"):
        fastloss.cross_entropy(x, bad, return_grad=True, out=out)
    assert (out == 3.0).all()


def test_fast_path_declines_other_layouts(rng):
    """kernels.cross_entropy_plain returns None, writing nothing, for what it does not
    take (the caller then takes the general path)."""
    k = _backend.kernels
    x, y = _logits(rng, 30, 6, np.float32), _labels(rng, 30, 6, np.int64)
    out = np.full_like(x, 5.0)
    declined = [
        (x.tolist(), y), (x, y.tolist()), (x.astype(np.float16), y), (x[:, ::2], y[:]),
        (x.reshape(5, 6, 6), y), (x, y.astype(np.uint8)), (x, y[:29]), (x[:0], y[:0]),
        (x.astype(x.dtype.newbyteorder()), y), (x, y.astype(y.dtype.newbyteorder())),
        (x, np.where(y == 2, 6, y)),
    ]
    for a, b in declined:
        assert k.cross_entropy_plain(a, b, out, True, -100, True, 1) is None
        assert (out == 5.0).all()
    assert k.cross_entropy_plain(x, y, out, False, -100, True, 1) is None
    assert k.cross_entropy_plain(x, y, x[::-1].copy()[::-1], True, -100, True, 1) is None


def test_common_calls_take_the_fast_path(rng, monkeypatch):
    from fastloss import classification

    seen = []
    real = classification._cross_entropy_plain

    def spy(*args):
        seen.append(real(*args))
        return seen[-1]

    monkeypatch.setattr(classification, "_cross_entropy_plain", spy)
    x, y = _logits(rng, 256, 10, np.float32), _labels(rng, 256, 10, np.int64)
    fastloss.cross_entropy(x, y, return_grad=True, out=np.empty_like(x), backend="native")
    fastloss.cross_entropy(x.astype(np.float64), y.astype(np.int32), reduction="sum")
    fastloss.cross_entropy(x, np.where(y < 0, 3, y), ignore_index=3, label_smoothing=0, z_loss=0.0)
    assert len(seen) == 3 and all(r is not None for r in seen)
    fastloss.cross_entropy(x, y, backend="numpy")
    assert seen[-1] is None
