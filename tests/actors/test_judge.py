import sys
import textwrap

import pytest

from actors.judge import JudgeError, PreferenceJudge
from actors.remote import RayCluster

CONV = [{"role": "user", "content": "2+3"}]


@pytest.fixture
def judges_module(tmp_path, monkeypatch):
    """A user's judge module outside the package, importable from the Python path."""
    (tmp_path / "my_judges.py").write_text(textwrap.dedent('''
        class LongerWins:
            """Prefers the longer answer; not antisymmetric by declaration."""
            def __init__(self, bias=0.0):
                self.bias = bias
            def compare(self, conversations, a, b):
                return [min(1.0, max(0.0, 0.5 + 0.1 * (len(x) - len(y)) + self.bias)) for x, y in zip(a, b)]

        class WrongCount:
            def compare(self, conversations, a, b):
                return [0.5]

        class OutOfRange:
            def compare(self, conversations, a, b):
                return [1.5 for _ in a]

        class Flaky:
            calls = 0
            def __init__(self, fail_times=1):
                self.fail_times = fail_times
            def compare(self, conversations, a, b):
                Flaky.calls += 1
                if Flaky.calls <= self.fail_times:
                    raise TimeoutError("endpoint timed out")
                return [0.5 for _ in a]
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_judges"
    sys.modules.pop("my_judges", None)


def test_rule_judge_is_the_tasks_and_antisymmetric(task):
    judge = PreferenceJudge(kind="rule", task=task)
    assert judge.antisymmetric
    p = judge.compare([CONV] * 3, ["5!", "5.", "4~"], ["5.", "5!", "5~"])
    w, (m0, _, m2) = task.correctness_weight, task.margins
    assert p == pytest.approx([w * 0.5 + (1 - w) * (0.5 + m0), w * 0.5 + (1 - w) * (0.5 - m0),
                               w * 0.0 + (1 - w) * 0.5])


def test_custom_judge_is_loaded_and_symmetrised(judges_module):
    judge = PreferenceJudge(kind="custom", target=f"{judges_module}:LongerWins", settings={"bias": 0.1})
    # raw: P(a≻b) = .5 + .1·(2 − 1) + .1 = .7 and P(b≻a) = .5 − .1 + .1 = .5 → ½(.7 + 1 − .5) = .6
    assert judge.compare([CONV], ["ab"], ["a"]) == pytest.approx([0.6])
    assert judge.name == f"{judges_module}:LongerWins"


@pytest.mark.parametrize("target, message", [
    ("WrongCount", "returned 1 probabilities for 2 pairs"),
    ("OutOfRange", "P(a ≻ b) = 1.5 for pair 0 is outside [0, 1]"),
])
def test_out_of_contract_answers_name_the_judge(judges_module, target, message):
    judge = PreferenceJudge(kind="custom", target=f"{judges_module}:{target}")
    with pytest.raises(JudgeError) as err:
        judge.compare([CONV, CONV], ["1!", "2!"], ["3!", "4!"])
    assert f"judge {judges_module}:{target}" in str(err.value) and message in str(err.value)


def test_a_raising_judge_is_retried_then_reported(judges_module):
    flaky = PreferenceJudge(kind="custom", target=f"{judges_module}:Flaky", settings={"fail_times": 2},
                            retries=2, retry_wait=0.0)
    assert flaky.compare([CONV], ["1!"], ["2!"]) == [0.5]  # failed twice, third attempt answered
    hopeless = PreferenceJudge(kind="custom", target=f"{judges_module}:Flaky", settings={"fail_times": 10**6},
                               retries=1, retry_wait=0.0)
    with pytest.raises(JudgeError, match="failed 2 times: TimeoutError: endpoint timed out"):
        hopeless.compare([CONV], ["1!"], ["2!"])


@pytest.mark.parametrize("kwargs, message", [
    (dict(kind="oracle"), "unknown judge 'oracle'; choose from"),
    (dict(kind="custom", target="nowhere_module:X"), "cannot import 'nowhere_module'"),
    (dict(kind="custom", target="json:NoSuchClass"), "has no attribute 'NoSuchClass'"),
    (dict(kind="custom", target="no-colon"), "must look like 'module:Class'"),
])
def test_bad_judge_configs(kwargs, message):
    from framework.errors import InputError

    with pytest.raises(InputError, match=None) as err:
        PreferenceJudge(**kwargs)
    assert message in str(err.value)


def test_judge_errors_cross_the_ray_boundary_as_themselves(ray_session, task):
    cluster = RayCluster()
    try:
        judge = cluster.spawn(PreferenceJudge, cpus=0, kind="rule", task=task)
        assert cluster.get(judge.call(PreferenceJudge.compare, [CONV], ["5!"], ["4!"]))[0] > 0.5
        with pytest.raises(JudgeError, match="1 conversations, 2 a, 1 b"):
            cluster.get(judge.call(PreferenceJudge.compare, [CONV], ["5!", "5."], ["4!"]))
    finally:
        cluster.shutdown()
