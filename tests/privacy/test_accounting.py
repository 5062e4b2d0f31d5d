"""The accountant against Opacus's own reference value, its inverse, and the budget."""

import pytest

from framework.errors import InputError
from privacy.accounting import Budget, epsilon, noise_multiplier_for


def test_epsilon_matches_opacus_reference_value():
    # Opacus's test suite: σ = 1.5, q = 0.04, 2250 steps, δ = 1e-5 under RDP → ε = 7.32911
    eps = epsilon(noise_multiplier=1.5, sample_rate=0.04, steps=2250, delta=1e-5, accountant="rdp")
    assert eps == pytest.approx(7.32911, abs=5e-6)


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_noise_multiplier_for_inverts_epsilon(accountant):
    eps = epsilon(noise_multiplier=1.5, sample_rate=0.04, steps=500, delta=1e-5, accountant=accountant)
    sigma = noise_multiplier_for(target_epsilon=eps, delta=1e-5, sample_rate=0.04, steps=500, accountant=accountant)
    assert sigma == pytest.approx(1.5, rel=2e-3)
    # the returned σ never overspends
    assert epsilon(noise_multiplier=sigma, sample_rate=0.04, steps=500, delta=1e-5, accountant=accountant) <= eps


def test_budget_refuses_the_step_that_would_cross_the_target():
    per_step = [epsilon(noise_multiplier=0.8, sample_rate=0.1, steps=n, delta=1e-5) for n in range(1, 40)]
    target = (per_step[9] + per_step[10]) / 2  # between 10 and 11 steps
    budget = Budget(target_epsilon=target, delta=1e-5)
    taken = 0
    while budget.allows(noise_multiplier=0.8, sample_rate=0.1):
        budget.step(noise_multiplier=0.8, sample_rate=0.1)
        taken += 1
    assert taken == 10
    assert budget.spent() == pytest.approx(per_step[9]) and budget.spent() <= target
    again = Budget.from_state_dict(budget.state_dict())
    assert again.spent() == budget.spent()


def test_accounting_rejects_bad_arguments():
    with pytest.raises(InputError, match="accountant"):
        epsilon(noise_multiplier=1, sample_rate=0.1, steps=10, delta=1e-5, accountant="gdp")
    with pytest.raises(InputError, match="sample_rate"):
        epsilon(noise_multiplier=1, sample_rate=1.5, steps=10, delta=1e-5)
    with pytest.raises(InputError, match="delta"):
        noise_multiplier_for(target_epsilon=1, delta=0, sample_rate=0.1, steps=10)
