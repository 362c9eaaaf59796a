"""The attack step's arithmetic (float masks, row copies, integer columns as strided slices)
against the selects it replaces, bit for bit: a faster step must give the same numbers."""

from __future__ import annotations

import pytest
import torch

from pytest_hepguard.attacks.base import ascend, signed_step
from pytest_hepguard.envelope import Envelope, _column_slices
from pytest_hepguard.uncertainties import FeatureSpec


def select_step(grad: torch.Tensor, up: torch.Tensor, down: torch.Tensor, size: float):
    """The definition: +size*up where the gradient is positive, -size*down where negative, 0
    elsewhere (NaN included)."""
    return size * torch.where(grad > 0, up, torch.where(grad < 0, -down, 0.0))


def select_project(env: Envelope, x0: torch.Tensor, x: torch.Tensor, box):
    """The definition: integer offsets rounded, then clamped to the box."""
    x = torch.where(env.integer, x0 + torch.round(x - x0), x)
    return torch.clamp(x, box[0], box[1])


def specs(integer_columns: set[int], n: int = 13) -> list[FeatureSpec]:
    out = []
    for j in range(n):
        if j in integer_columns:
            out.append(FeatureSpec(f"i{j}", "absolute", 2.0, 1.0, min=0.0, integer=True))
        elif j % 4 == 1:
            out.append(FeatureSpec(f"r{j}", "relative", 0.1, 0.05, min=0.0, sentinels=(-999.0,)))
        else:
            out.append(FeatureSpec(f"a{j}", "absolute", 0.3, 0.2, max=3.0))
    return out


@pytest.mark.parametrize("size", [1.0, 0.125, 2.5])
def test_signed_step_is_the_select(size: float) -> None:
    g = torch.Generator().manual_seed(0)
    grad = torch.randn(500, 9, generator=g)
    grad[::7] = 0.0
    grad[3, 4] = float("nan")
    grad[5, 2] = -0.0
    up, down = torch.rand(500, 9, generator=g), torch.rand(500, 9, generator=g)
    down[::5] = 0.0  # a side that cannot move
    got = signed_step(grad, up, down, size)
    want = select_step(grad, up, down, size)
    assert torch.equal(got, want)
    assert got[3, 4] == 0.0 and got[5, 2] == 0.0


@pytest.mark.parametrize("integers", [set(), {3}, {2, 3, 4, 5}, {0, 5, 10}, {1, 2, 7, 8, 12}])
def test_project_round_and_ascend_are_the_selects(integers: set[int]) -> None:
    env = Envelope(specs(integers), torch.zeros(13).numpy())
    g = torch.Generator().manual_seed(len(integers))
    x0 = torch.randn(400, 13, generator=g) * 2 + 1
    for j in integers:
        x0[:, j] = torch.randint(0, 6, (400,), generator=g).float()
    x0[::9, 1] = -999.0  # sentinels never move
    up, down = env.sigmas(x0)
    box = env.box(x0, 1.5)
    far = x0 + torch.randn(400, 13, generator=g) * 3
    assert torch.equal(env.project(x0, far, box), select_project(env, x0, far, box))
    inside = torch.clamp(far, box[0], box[1])
    assert torch.equal(env.round(x0, inside, box), select_project(env, x0, inside, box))
    grad = torch.randn(400, 13, generator=g)
    want = torch.minimum(torch.maximum(inside + select_step(grad, up, down, 0.3), box[0]), box[1])
    assert torch.equal(ascend(inside, grad, 0.3 * up, 0.3 * down, box), want)


def test_column_slices_cover_exactly_the_columns() -> None:
    for columns in ([], [4], [0, 1, 2], [2, 7, 12, 17, 18, 40], [1, 3, 4, 9, 14, 19]):
        covered = sorted(j for s in _column_slices(columns) for j in range(100)[s])
        assert covered == columns
    assert _column_slices([5, 10, 15, 20]) == [slice(5, 21, 5)]  # one strided view
