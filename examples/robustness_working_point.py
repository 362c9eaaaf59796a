"""Robustness at the analysis working point: efficiency and mistag rate of the BvL cut."""


def robustness_efficiency_stable_under_random_smearing(hepguard):
    """A 1-sigma Gaussian smearing of every input (the usual systematic variation) must keep
    the b-tagging efficiency at the working point within one percentage point."""
    result = hepguard.attack("random", epsilon=1.0)
    assert abs(result.efficiency_perturbed - result.efficiency_nominal) < 0.01


def robustness_worst_case_efficiency(hepguard):
    """Even the worst case inside the envelope (PGD) keeps 60 % of the b jets tagged."""
    result = hepguard.attack("pgd", epsilon=1.0, steps=20)
    assert result.efficiency_nominal > 0.69
    assert result.efficiency_perturbed > 0.60
    assert result.mistag_perturbed < 5 * result.mistag_nominal
