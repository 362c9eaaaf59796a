"""The envelope: boxes checked against hand-computed values and an independent numpy rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import SPECS, make_inputs

from pytest_hepguard.envelope import Envelope, feature_std
from pytest_hepguard.uncertainties import FeatureSpec


def test_box_matches_hand_computed_values() -> None:
    std = np.array([0, 0, 0, 0, 0, 0, 2.0])
    env = Envelope(SPECS, std)
    x0 = torch.tensor(
        [
            [1.0, 10.0, 1.5, 3.0, 20.0, 7.0, 5.0],
            [-2.0, 0.2, 1.95, 0.0, -999.0, 7.0, 5.0],
        ]
    )
    lo, hi = env.box(x0, 1.0)
    # a: +-0.5; b: 10% of 10 -> +-1, and of 0.2 -> +-0.02 (min 0 not reached); c: up 0.3 capped
    # by max 2 (room 0.5 / 0.05), down 0.1; d: +-1 step, but not below 0; e: 5% of 20, sentinel
    # fixed; f frozen; g: 0.2 * std 2 = 0.4.
    exp_lo = [[0.5, 9.0, 1.4, 2.0, 19.0, 7.0, 4.6], [-2.5, 0.18, 1.85, 0.0, -999.0, 7.0, 4.6]]
    exp_hi = [[1.5, 11.0, 1.8, 4.0, 21.0, 7.0, 5.4], [-1.5, 0.22, 2.0, 1.0, -999.0, 7.0, 5.4]]
    torch.testing.assert_close(lo, torch.tensor(exp_lo))
    torch.testing.assert_close(hi, torch.tensor(exp_hi))
    lo2, hi2 = env.box(x0, 2.5)  # integer feature: floor(2.5 * 1) = 2 whole steps
    assert hi2[0, 3] == 5.0 and lo2[0, 3] == 1.0 and lo2[1, 3] == 0.0


def test_nominal_outside_bounds_is_not_pushed_further() -> None:
    env = Envelope(SPECS, np.ones(7))
    x0 = torch.tensor([[0.0, -0.5, 2.5, 0.0, 1.0, 0.0, 0.0]])  # b below min 0, c above max 2
    lo, hi = env.box(x0, 1.0)
    assert lo[0, 1] == -0.5 and hi[0, 1] == pytest.approx(-0.5 + 0.05)
    assert hi[0, 2] == 2.5 and lo[0, 2] == pytest.approx(2.4)


def test_project_rounds_integer_offsets_and_clamps() -> None:
    env = Envelope(SPECS, np.ones(7))
    x0 = make_inputs(50)
    box = env.box(x0, 1.0)
    x = env.project(x0, x0 + 10 * torch.randn(x0.shape), box)
    assert env.contains(x0, x, 1.0).all()
    offsets = (x - x0)[:, 3]
    assert torch.equal(offsets, offsets.round())


def test_feature_std_excludes_sentinels() -> None:
    x = np.array([[1.0, -999.0], [3.0, 2.0], [5.0, 4.0]], dtype=np.float32)
    specs = (
        FeatureSpec("s", "std", 0.1, 0.1),
        FeatureSpec("t", "std", 0.1, 0.1, sentinels=(-999.0,)),
        FeatureSpec("u", "absolute", 0.1, 0.1),
    )
    std = feature_std(np.c_[x, x[:, :1]], specs)
    assert std == pytest.approx([np.std([1, 3, 5]), 1.0, 0.0])  # only std features need it


def test_in_sigmas_uses_the_side_sigma() -> None:
    env = Envelope(SPECS, np.ones(7))
    x0 = torch.tensor([[0.0, 1.0, 1.0, 2.0, 10.0, 0.0, 0.0]])
    x = x0 + torch.tensor([[0.25, -0.05, -0.1, 1.0, 0.5, 0.0, 0.1]])
    d = env.in_sigmas(x0, x)
    torch.testing.assert_close(d, torch.tensor([[0.5, -0.5, -1.0, 1.0, 1.0, 0.0, 0.5]]))
    moved_frozen = x0.clone()
    moved_frozen[0, 5] = 1.0
    assert torch.isinf(env.in_sigmas(x0, moved_frozen)[0, 5])
    assert not env.contains(x0, moved_frozen, 1.0)[0, 5]
