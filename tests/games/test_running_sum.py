"""The running_sum task: its judge, its equilibrium and its (corrupted) demonstrations."""

import numpy as np
import pytest

from framework.errors import InputError
from games.tasks import get_task
from games.tasks.running_sum import STYLES, running_total


def test_judge_is_constant_sum_and_the_equilibrium_is_unexploitable():
    task = get_task("running_sum", turns=3)
    P = task.class_matrix
    np.testing.assert_allclose(P + P.T, 1.0)
    d = np.zeros(8)
    d[4:7] = task.equilibrium_styles()  # always correct, styles (2/7, 4/7, 1/7)
    assert task.exploitability(d[None])[0] == pytest.approx(0.0, abs=1e-12)
    uniform = np.zeros(8)
    uniform[4:7] = 1 / 3  # the demonstrations' styles are exploitable by (1 − w)(m₂ − m₁)/3
    assert task.exploitability(uniform[None])[0] == pytest.approx(0.3 * (0.4 - 0.2) / 3)


@pytest.mark.parametrize("w", [0.0, 0.7, 1.0])
def test_exploitability_splits_exactly_into_correctness_and_style(w):
    task = get_task("running_sum", turns=3, correctness_weight=w)
    counts = np.random.default_rng(0).integers(0, 5, size=(50, 8)).astype(float) + np.eye(8)[np.arange(50) % 8]
    parts = task.exploitability_parts(counts)
    np.testing.assert_allclose(parts["correctness"] + parts["style"], task.exploitability(counts), atol=1e-12)
    # hand-derived: half the answers right, all in style "!" → correctness w/4; the best reply
    # "~" beats "!" by m₂ = 0.4 → style (1 − w)·0.4
    d = np.zeros((1, 8))
    d[0, [0, 4]] = 1
    parts = task.exploitability_parts(d)
    assert parts["correctness"][0] == pytest.approx(w / 4)
    assert parts["style"][0] == pytest.approx((1 - w) * 0.4)
    # unreadable answers lose for sure on style: the style part is (1 − w)·½
    assert task.exploitability_parts(np.eye(8)[[3]])["style"][0] == pytest.approx((1 - w) * 0.5)


@pytest.mark.parametrize("corruption", [0.0, 0.3, 1.0])
def test_corrupted_demonstrations_have_wrong_totals_at_the_asked_rate(corruption):
    task = get_task("running_sum", turns=3)
    demos = task.demonstrations(1000, seed=0, corruption=corruption)
    wrong = total = 0
    for messages in demos:
        for i, m in enumerate(messages):
            if m["role"] == "assistant":
                number, style = m["content"][:-1], m["content"][-1]
                assert style in STYLES
                wrong += int(number) != running_total(messages[:i])
                total += 1
    assert abs(wrong / total - corruption) < 0.05  # 3000 answers: σ ≤ 0.01
    clean = task.demonstrations(1000, seed=0)
    assert [[m["content"] for m in c if m["role"] == "user"] for c in demos] == \
        [[m["content"] for m in c if m["role"] == "user"] for c in clean]  # same prompts at every rate
    with pytest.raises(InputError, match="corruption"):
        task.demonstrations(1, seed=0, corruption=1.5)


def test_the_correct_and_malformed_classes_are_what_classify_gives_such_answers():
    """A right total in each style, a wrong one in each style, and unreadable answers: each lands in
    the class the task names for its kind (the error-kind breakdown reads these)."""
    task = get_task("running_sum", turns=2)
    state = task.heldout_states(1, 0)[0]
    total = running_total(state)
    kinds = {i: "correct" for i in task.correct_classes} | {i: "malformed" for i in task.malformed_classes}
    for style in STYLES:
        assert kinds.get(task.classify(state, f"{total}{style}")) == "correct"
        assert task.classify(state, f"{total + 1}{style}") not in kinds
    for text in ("", f"{total}", "the total", f"{style}{total}"):
        assert kinds.get(task.classify(state, text)) == "malformed", text
    assert set(task.correct_classes).isdisjoint(task.malformed_classes)
