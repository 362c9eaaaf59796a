"""Custom robustness tests of the example tagger, written as plain asserts.

Collected by pytest-hepguard when an uncertainty file is given (files ``robustness_*.py``,
functions ``robustness_*``); run with the README's main-job command.
"""

import pytest


def robustness_attacks_beat_noise(hepguard):
    """A gradient attack of one sigma must find more flips than random noise of one sigma:
    otherwise the gradients are masked and the attack numbers mean little."""
    pgd = hepguard.attack("pgd", epsilon=1.0, steps=20)
    assert pgd.fooling_rate > pgd.random_fooling_rate + 3 * pgd.fooling_rate_err
    assert pgd.zero_gradient_fraction < 0.10


@pytest.mark.parametrize("epsilon", [0.5, 1.0, 2.0])
def robustness_half_to_two_sigma(hepguard, epsilon):
    """Flip rate and AUC loss scale with the attack size; bound both at every size."""
    result = hepguard.attack("fgsm", epsilon=epsilon)
    assert result.fooling_rate < 0.05 * epsilon
    assert result.auc_drop < 0.05 * epsilon


def robustness_envelope_holds(hepguard, hepguard_uncertainties):
    """No feature moved by more than epsilon sigmas; frozen features did not move at all."""
    result = hepguard.attack("pgd", epsilon=0.5, steps=10)
    for feature in hepguard_uncertainties.features:
        moved = result.max_displacement_sigma[feature.name]
        assert moved <= 0.5 * (1 + 1e-4), feature.name  # float32 rounding of x + delta
        if feature.frozen:
            assert result.moved_fraction[feature.name] == 0.0, feature.name
