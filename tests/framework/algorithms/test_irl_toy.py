"""The toy example: one state, three actions, demonstrations on action 0."""

import numpy as np

from framework.algorithms.tabular import irl_policy, sft_policy


def test_sft_puts_all_mass_on_the_demonstrated_action():
    assert sft_policy(3, 0, steps=5000)[0] > 0.999


def test_irl_spreads_mass_regularised_toward_the_reference():
    reference = np.array([0.2, 0.5, 0.3])
    pi, r = irl_policy(reference, 0, beta=1.0, lam=1.0)
    # the first-order condition r = (e_d − π_r)/(βλ) holds at the solution
    np.testing.assert_allclose(r, (np.eye(3)[0] - pi) / 1.0, atol=1e-9)
    assert reference[0] < pi[0] < 0.9  # moves toward the demonstration, keeps mass elsewhere
    # every other action loses reward in proportion to its own mass: r_a = −π_r(a)/(βλ)
    assert r[0] > 0 > r[2] > r[1]
    # weaker regularisation → closer to SFT; stronger → closer to the reference
    weak, _ = irl_policy(reference, 0, beta=1.0, lam=0.05)
    strong, _ = irl_policy(reference, 0, beta=1.0, lam=50.0)
    assert pi[0] < weak[0] and np.abs(strong - reference).max() < 0.02
