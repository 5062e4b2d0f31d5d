import json

import numpy as np
import pytest
import torch

from framework.algorithms.registry import get_algorithm
from framework.algorithms.mpo import one_step_q, select, win_matrix
from framework.errors import InputError
from framework.records import Comparison, Rollout


def _rollout(sample, logprobs, response_ids, turn=0, version=0):
    return Rollout("c0", turn, sample, 0, json.dumps([{"role": "user", "content": "1+1"}]), [5, 6],
                   response_ids, logprobs, f"r{sample}", version, 0)


def test_one_step_q_by_hand():
    """K = 3 with P(0≻1) = .8, P(0≻2) = .6, P(1≻2) = .3 (mirrors filled as 1 − P, self-pairs ½):

    Q̂₀ = (.5 + .8 + .6)/3 = .63333, Q̂₁ = (.2 + .5 + .3)/3 = .33333, Q̂₂ = (.4 + .7 + .5)/3 = .53333.
    """
    cs = [Comparison("c0", 0, 0, 0, 1, 0.8, "j"), Comparison("c0", 0, 0, 0, 2, 0.6, "j"),
          Comparison("c0", 0, 0, 1, 2, 0.3, "j")]
    np.testing.assert_allclose(one_step_q(win_matrix(3, cs)), [0.633333, 0.333333, 0.533333], atol=1e-6)
    assert select(np.array([0.63, 0.33, 0.53]), "best_worst") == [0, 1]
    assert select(np.array([0.63, 0.33, 0.53]), "all") == [0, 1, 2]
    with pytest.raises(InputError, match="no comparison"):
        win_matrix(3, cs[:2])


def test_build_batch_aligns_targets_tokens_and_masks():
    rs = [_rollout(0, [-0.5, -0.25], [7, 8]), _rollout(1, [-1.0], [9])]
    cs = [Comparison("c0", 0, 0, 0, 1, 0.9, "j")]
    batch = get_algorithm("mpo").build_batch(rs, cs, keep="all", pad_id=0)
    torch.testing.assert_close(batch.q_hat, torch.tensor([0.7, 0.3]))  # (.5+.9)/2, (.1+.5)/2
    torch.testing.assert_close(batch.logp_old, torch.tensor([-0.75, -1.0]))
    assert batch.input_ids.tolist() == [[5, 6, 7, 8], [5, 6, 9, 0]]
    assert batch.response_mask.tolist() == [[0, 0, 1, 1], [0, 0, 1, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    halves = batch.shard(2)
    assert [len(h) for h in halves] == [1, 1] and halves[1].q_hat.item() == pytest.approx(0.3)
