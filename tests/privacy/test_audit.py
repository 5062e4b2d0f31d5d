"""One-run auditing: the lower bound against a closed form, and its behaviour on random guesses."""

import math

import numpy as np
import pytest

from privacy.audit import audit, epsilon_lower_bound, p_value


def test_all_guesses_right_matches_the_closed_form():
    """δ = 0, r = v = 100: P[Bin(100, q) ≥ 100] = q¹⁰⁰ ≤ 0.05 ⇔ q ≤ 0.05^(1/100), q = e^ε/(1+e^ε)."""
    q = 0.05 ** (1 / 100)
    expected = math.log(q / (1 - q))
    assert epsilon_lower_bound(m=1000, r=100, v=100, delta=0.0) == pytest.approx(expected, rel=1e-6)


def test_delta_only_weakens_the_bound_and_p_value_grows_with_eps():
    assert epsilon_lower_bound(m=1000, r=100, v=90, delta=1e-5) <= epsilon_lower_bound(m=1000, r=100, v=90, delta=0)
    ps = [p_value(m=1000, r=100, v=70, eps=e, delta=1e-5) for e in (0.0, 0.5, 1.0, 2.0)]
    assert ps == sorted(ps)


def test_chance_level_guesses_give_no_evidence():
    rng = np.random.default_rng(0)
    included = rng.random(1000) < 0.5
    result = audit(rng.normal(size=1000), included, delta=1e-5)
    assert result["guesses"] == 200
    assert result["eps_lower"] < 0.5
    # a perfect membership signal gives a large bound
    perfect = audit(included.astype(float), included, delta=1e-5)
    assert perfect["correct"] == 200 and perfect["eps_lower"] > 3
