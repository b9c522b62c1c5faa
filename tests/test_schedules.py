"""fastloss.schedules vs torch.optim.lr_scheduler, value by value."""
import math

import numpy as np
import pytest

import fastloss.optim as fo
from fastloss import schedules as S

torch = pytest.importorskip("torch")

N = 60


def _pair(opt_name="SGD", lrs=(0.1, 0.02), **kw):
    ours = getattr(fo, opt_name)([{"params": [np.zeros(2)], "lr": lrs[0]},
                                  {"params": [np.zeros(3)], "lr": lrs[1]}], **kw)
    theirs = getattr(torch.optim, opt_name)([{"params": [torch.zeros(2, requires_grad=True)],
                                              "lr": lrs[0]},
                                             {"params": [torch.zeros(3, requires_grad=True)],
                                              "lr": lrs[1]}], **kw)
    return ours, theirs


def _compare(ours_s, theirs_s, ours, theirs, n=N, keys=("lr",)):
    for k in range(n):
        for og, tg in zip(ours.param_groups, theirs.param_groups):
            for key in keys:
                a, b = og[key], tg[key]
                if key == "betas":
                    a, b = a[0], b[0]
                assert a == pytest.approx(b, rel=1e-12, abs=1e-15), (k, key)
        assert ours_s.get_last_lr() == pytest.approx(
            [g["lr"] for g in theirs.param_groups], rel=1e-12, abs=1e-15)
        theirs.step()
        theirs_s.step()
        ours_s.step()


L = torch.optim.lr_scheduler


@pytest.mark.parametrize("ours,theirs", [
    (lambda o: S.StepLR(o, 7, 0.5), lambda o: L.StepLR(o, 7, 0.5)),
    (lambda o: S.MultiStepLR(o, [5, 11, 30], 0.3), lambda o: L.MultiStepLR(o, [5, 11, 30], 0.3)),
    (lambda o: S.ExponentialLR(o, 0.95), lambda o: L.ExponentialLR(o, 0.95)),
    (lambda o: S.LinearLR(o, 0.1, 1.0, 10), lambda o: L.LinearLR(o, 0.1, 1.0, 10)),
    (lambda o: S.LinearLR(o, 1.0, 0.2, 25), lambda o: L.LinearLR(o, 1.0, 0.2, 25)),
    (lambda o: S.CosineAnnealingLR(o, N, eta_min=1e-3),
     lambda o: L.CosineAnnealingLR(o, N, eta_min=1e-3)),
    (lambda o: S.ConstantLR(o, factor=1.0), lambda o: L.ConstantLR(o, factor=1.0)),
    (lambda o: S.ConstantLR(o, 0.5, 7), lambda o: L.ConstantLR(o, 0.5, 7)),
    (lambda o: S.ConstantLR(o), lambda o: L.ConstantLR(o)),
], ids=["step", "multistep", "exponential", "linear-warmup", "linear-decay", "cosine", "const",
        "const-factor", "const-default"])
def test_schedulers_match_torch(ours, theirs):
    o, t = _pair()
    _compare(ours(o), theirs(t), o, t)


def test_cosine_with_warmup_matches_torch_sequential():
    o, t = _pair()
    w = 8
    ours = S.CosineAnnealingLR(o, N - w, eta_min=0.0, warmup_steps=w, warmup_start_factor=0.1)
    theirs = L.SequentialLR(t, [L.LinearLR(t, 0.1, 1.0, w), L.CosineAnnealingLR(t, N - w)],
                            milestones=[w])
    _compare(ours, theirs, o, t, n=N)
    # after T_max: we hold eta_min
    fn = S.cosine_warmup(1.0, 10, 2)
    assert fn(10) == fn(25) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("kw", [
    dict(), dict(anneal_strategy="linear"), dict(three_phase=True, pct_start=0.25),
])
@pytest.mark.parametrize("opt_name", ["SGD", "Adam"])
def test_one_cycle_matches_torch(kw, opt_name):
    extra = dict(momentum=0.9) if opt_name == "SGD" else {}
    o, t = _pair(opt_name, **extra)
    ours = S.OneCycleLR(o, max_lr=[0.5, 0.1], total_steps=N, **kw)
    theirs = L.OneCycleLR(t, max_lr=[0.5, 0.1], total_steps=N, **kw)
    key = "momentum" if opt_name == "SGD" else "betas"
    _compare(ours, theirs, o, t, n=N, keys=("lr", key))


@pytest.mark.parametrize("mode,threshold_mode", [("min", "rel"), ("max", "abs")])
def test_reduce_on_plateau_matches_torch(mode, threshold_mode):
    o, t = _pair()
    kw = dict(mode=mode, threshold_mode=threshold_mode, factor=0.5, patience=2, cooldown=1,
              min_lr=0.004, threshold=1e-3)
    ours = S.ReduceLROnPlateau(o, **kw)
    theirs = L.ReduceLROnPlateau(t, **kw)
    rng = np.random.default_rng(0)
    metrics = np.concatenate([np.linspace(1, 0.5, 10), 0.5 + rng.random(40) * 0.1])
    if mode == "max":
        metrics = -metrics
    for m in metrics:
        ours.step(m)
        theirs.step(m)
        assert [g["lr"] for g in o.param_groups] == pytest.approx(
            [g["lr"] for g in t.param_groups], rel=1e-12)


def test_inverse_time_is_keras_decay():
    """Keras SGD(lr, decay=d): update k (0-based) uses lr / (1 + d k)."""
    p = np.array([1.0])
    opt = fo.SGD([p], lr=0.1)
    sched = S.InverseTimeLR(opt, decay=0.01)
    expect = 1.0
    for k in range(20):
        assert opt.param_groups[0]["lr"] == pytest.approx(0.1 / (1 + 0.01 * k), rel=1e-15)
        opt.step([np.array([1.0])])
        expect -= 0.1 / (1 + 0.01 * k)
        sched.step()
    assert p[0] == pytest.approx(expect, rel=1e-13)
    stair = S.inverse_time(1.0, 0.5, decay_steps=10, staircase=True)
    assert [stair(t) for t in (0, 9, 10, 25)] == [1.0, 1.0, 1 / 1.5, 1 / 2.0]


def test_scheduler_state_dict_and_pure_functions():
    o, _ = _pair()
    s = S.StepLR(o, 3, 0.5)
    for _ in range(7):
        s.step()
    sd = s.state_dict()
    o2, _ = _pair()
    s2 = S.StepLR(o2, 3, 0.5)
    s2.load_state_dict(sd)
    assert s2.get_last_lr() == s.get_last_lr()
    assert S.exponential(2.0, 0.5)(3) == 0.25
    assert S.constant(0.3)(100) == 0.3
    assert S.multi_step(1.0, [2, 4])(4) == pytest.approx(0.01)
    assert math.isclose(S.one_cycle(1.0, 100)(0), 1.0 / 25)
    with pytest.raises(ValueError):
        S.one_cycle(1.0, 10)(11)
    with pytest.raises(ValueError):
        S.step_decay(0.1, 0)
