"""The native bfloat16 element-wise kernel bit for bit against the float32 kernel on
the widened inputs, including the double loss sum (which the public functions round
to 16 bits, where a changed summation order could hide).

Prediction, target and gradient all bfloat16 and no weights is the case the
one-pass loops (native/elementwise_bf16.h; baseline and avx2 levels) take; sizes
cover whole chunks, partial chunks (the tile path finishes them), several blocks
and threads. Runs on whatever level is selected (FASTLOSS_SIMD).
"""
import importlib.util
import pathlib

import numpy as np
import pytest

import fastloss
from fastloss import _backend
from fastloss._elementwise_spec import BY_NAME


def _sibling(name):
    path = pathlib.Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_fastloss_tests_onepass_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_half = _sibling("test_losses_half")
CASES, BF16, _hostile, _same_bits = _half.CASES, _half.BF16, _half._hostile, _half._same_bits

pytestmark = pytest.mark.skipif(not fastloss.native_available(), reason="no native extension")


def _params(spec, call, t):
    """The kernel's option tuple (options, derived coefficients, zero_one); a
    per-element option is given its scalar default."""
    o = {x.name: (x.default if x.per_element or x.name not in call else float(call[x.name]))
         for x in spec.options}
    values = [o[x.name] for x in spec.options] + [f(o) for _, f in spec.coefficients]
    if spec.target == "labels":
        values.append(float(not np.any(t.astype(np.float32) == -1)))
    return tuple(float(v) for v in values)


def _same_sum(a, b):
    assert (np.isnan(a) and np.isnan(b)) or np.float64(a).tobytes() == np.float64(b).tobytes(), (a, b)


@pytest.mark.parametrize("n", [1, 127, 128, 1000, 3 * 2048 + 200])
@pytest.mark.parametrize("name,opts", CASES)
def test_bfloat16_kernel_is_float32_kernel_rounded(name, opts, n, rng):
    k, spec = _backend.kernels, BY_NAME[name]
    kind = k.ELEMENTWISE_KINDS[name]
    p, t, call = _hostile(name, opts, BF16, rng, max(n, 12))
    p, t = p[:n].copy(), t[:n].copy()
    par = _params(spec, call, t)
    p32, t32 = p.astype(np.float32), t.astype(np.float32)
    for nt in (1, 2):
        g16, g32 = np.empty_like(p), np.empty_like(p32)
        with np.errstate(all="ignore"):
            s16 = k.elementwise_half(kind, p, t, None, None, None, g16, None, par, 0.37, nt, 0)
            s32 = k.elementwise(kind, p32, t32, None, None, None, g32, None, par, 0.37, nt, 0)
        _same_sum(s16, s32)
        _same_bits(g16, g32.astype(BF16))
        # without a finite-valued twist: the plain data, where sums are finite
        q, u = _half._half_case(name, opts, (n,), BF16, rng)[:2]
        g16 = np.empty_like(q)
        with np.errstate(all="ignore"):
            s16 = k.elementwise_half(kind, q, u, None, None, None, g16, None, par, 1.0 / n, nt, 0)
            s32 = k.elementwise(kind, q.astype(np.float32), u.astype(np.float32), None, None,
                                None, g32, None, par, 1.0 / n, nt, 0)
        _same_sum(s16, s32)
        _same_bits(g16, g32.astype(BF16))
