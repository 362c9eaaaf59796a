"""Discriminants and decisions on hand-computed probabilities."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pytest_hepguard.decision import Decision
from pytest_hepguard.exceptions import DataError, ModelError
from pytest_hepguard.uncertainties import DecisionSpec, Ratio, WorkingPoint

P = torch.tensor(
    [
        [0.6, 0.1, 0.3],  # b-like
        [0.2, 0.5, 0.3],  # c-like
        [0.1, 0.1, 0.8],  # light-like
        [0.3, 0.4, 0.3],  # c-like, BvL 0.5
    ]
)
LABELS = np.array([0, 1, 2, 0])


def test_bvl_ratio_with_a_cut() -> None:
    spec = DecisionSpec(
        discriminant=Ratio((0,), (0, 2)),
        signal=(0,),
        background=(2,),
        working_point=WorkingPoint(cut=0.55),
    )
    d = Decision.resolve(spec, 3, "probabilities")
    disc = d.discriminant_of(P)
    torch.testing.assert_close(disc, torch.tensor([0.6 / 0.9, 0.2 / 0.5, 0.1 / 0.9, 0.5]))
    dec = d.decide(P).numpy()
    assert dec.tolist() == [1, 0, 0, 0]
    # b tagged: correct; c: neither signal nor background, never correct; light untagged:
    # correct; b untagged: wrong
    assert d.correct(dec, LABELS).tolist() == [True, False, True, False]


def test_argmax_defaults_for_multiclass() -> None:
    d = Decision.resolve(DecisionSpec(), 3, "probabilities")
    assert d.signal == (0,) and d.background == (1, 2) and d.cut is None
    torch.testing.assert_close(d.discriminant_of(P), P[:, 0])
    assert d.decide(P).tolist() == [0, 1, 2, 1]
    assert d.correct(d.decide(P).numpy(), LABELS).tolist() == [True, True, True, False]


def test_one_output_model_defaults() -> None:
    d = Decision.resolve(DecisionSpec(), 2, "logits")
    p = torch.tensor([[0.3, 0.7], [0.8, 0.2]])
    assert d.signal == (1,) and d.discriminant == 1
    torch.testing.assert_close(d.discriminant_of(p), torch.tensor([0.7, 0.2]))
    assert d.decide(p).tolist() == [1, 0]


def test_efficiency_working_point_sets_the_cut_on_signal() -> None:
    spec = DecisionSpec(discriminant=0, signal=(0,), working_point=WorkingPoint(efficiency=0.5))
    d = Decision.resolve(spec, 3, "probabilities")
    disc = np.array([0.9, 0.8, 0.1, 0.7, 0.6, 0.2])
    labels = np.array([0, 0, 2, 0, 0, 1])
    d = d.with_efficiency_cut(spec, disc, labels, None)
    tagged = disc[labels == 0] > d.cut
    assert tagged.mean() == pytest.approx(0.5)
    with pytest.raises(DataError, match="needs labels"):
        Decision.resolve(spec, 3, "probabilities").with_efficiency_cut(spec, disc, None, None)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (DecisionSpec(classes=("b", "light")), "lists 2 classes .* gives 3"),
        (DecisionSpec(discriminant=5), "column 5"),
        (DecisionSpec(signal=(4,)), "class index 4"),
        (DecisionSpec(working_point=WorkingPoint(cut=0.5)), "needs a discriminant"),
    ],
)
def test_decision_spec_that_does_not_fit_the_model(spec, message) -> None:
    with pytest.raises(ModelError, match=message):
        Decision.resolve(spec, 3, "probabilities")
