"""Records that cross role boundaries (DESIGN §1).

``Rollout`` and ``Comparison`` each have one Arrow schema: runs write them to Parquet shards
(``rollouts/``, ``comparisons/``), so any run can be inspected afterwards with ``datasets`` or
``pyarrow``. ``GenerationRequest`` is what the controller asks the generators for, ``Sample`` what a
generation backend returns, ``Pair`` two answers waiting for the judge, ``TrainBatch`` what the
learner trains on.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from pathlib import Path

import torch


@dataclass(frozen=True)
class Sample:
    """One sampled continuation of a prompt (what a generation backend returns)."""

    token_ids: list[int]  # (R,) sampled tokens, end-of-turn included if produced
    logprobs: list[float]  # (R,) log π of each token under the sampling policy (temperature 1)
    text: str  # decoded, special tokens removed


@dataclass(frozen=True)
class GenerationRequest:
    """What the generators produce for one iteration (an algorithm's plan says what).

    ``episodes`` are conversations to play, ``k`` answers per visited state, in ``mode`` ``tree``
    (K answers branch at every turn), ``paths`` (K whole conversations) or ``branches`` (a tree whose
    every answer is also continued to the end); ``demonstrations`` are (id, state, answer) triples,
    each scored by the sampling policy and answered ``k`` times at its state, at ``temperature``
    (0: greedy). Either may be empty.
    """

    k: int
    episodes: tuple = ()  # games.conversation.Episode
    mode: str = "tree"
    demonstrations: tuple = ()  # (id, chat messages ending with the user turn, demonstrated answer)
    temperature: float = 1.0  # of the answers to demonstrations (self-play samples at 1)

    def split(self, n: int) -> list["GenerationRequest"]:
        """Every n-th episode and demonstration, for each of ``n`` generators."""
        return [dataclasses.replace(self, episodes=self.episodes[i::n], demonstrations=self.demonstrations[i::n])
                for i in range(n)]


@dataclass(frozen=True)
class Rollout:
    """One sampled assistant turn: action a_h^k at state s_h."""

    # which conversation, turn and branch
    conversation_id: str
    turn: int  # h, 0-based
    sample: int  # k in 0..K−1; sample 0 continues the conversation
    iteration: int  # the driver iteration that asked for it
    # the state and the action
    messages: str  # JSON list of chat messages ending with the user turn (the state)
    prompt_ids: list[int]  # (P,) the state tokenised with the generation prompt
    response_ids: list[int]  # (R,) sampled tokens, end-of-turn included if produced
    response_logprobs: list[float]  # (R,) log π_t of each sampled token
    response: str  # decoded response text
    # provenance
    policy_version: int  # version of the weights that sampled it
    generator: int  # which generator actor
    learner_version: int = -1  # learner version when consumed (filled by the driver)
    stale: bool = False  # dropped for being older than max_staleness
    # -1: an answer drawn at its own state (what the learner trains on); h ≥ 0: one answer of the
    # continuation of answer `sample` of turn h to the end of the conversation (Monte-Carlo Q)
    branch_of: int = -1

    @property
    def state(self) -> list[dict]:
        return json.loads(self.messages)

    @property
    def key(self) -> tuple:
        """What names this rollout in a run: each is written once."""
        return self.iteration, self.conversation_id, self.turn, self.sample, self.branch_of

    @property
    def logprob(self) -> float:
        return float(sum(self.response_logprobs))


@dataclass(frozen=True)
class Comparison:
    """A judged pair at one state: P(a ≻ b), a and b being sample indices of that state."""

    conversation_id: str
    turn: int
    iteration: int
    a: int
    b: int
    probability: float
    judge: str
    # "self": b is a sample of this iteration at the state; "previous": b indexes the previous
    # iterate's answers cached for the same state (OMPO)
    opponent: str = "self"
    # h ≥ 0: a and b are the continuations (at this turn) of answers a and b of turn h
    branch_of: int = -1

    @property
    def key(self) -> tuple:
        """What names this comparison in a run: each is written once."""
        return self.iteration, self.conversation_id, self.turn, self.a, self.b, self.opponent, self.branch_of


@dataclass(frozen=True)
class Pair:
    """Two answers at one state, to be judged (a ``Comparison`` once judged)."""

    conversation_id: str
    turn: int
    a: int  # the sample index of answer a
    b: int  # the sample index of answer b (against the previous iterate: the cached answer's index)
    state: str  # JSON chat messages ending with the user turn (the conversation the judge reads)
    answer_a: str
    answer_b: str
    opponent: str = "self"  # as Comparison.opponent
    branch_of: int = -1  # as Comparison.branch_of

    def judged(self, probability: float, *, iteration: int, judge: str) -> Comparison:
        return Comparison(self.conversation_id, self.turn, iteration, self.a, self.b, float(probability), judge,
                          self.opponent, self.branch_of)


@dataclass(frozen=True)
class Verdicts:
    """A judge's answers for a list of pairs, and how the judging went (the pool's shares merged)."""

    probabilities: list  # (N,) P(a ≻ b), both orders combined; None: the pair failed and was dropped
    pairs: int = 0  # N
    asked: int = 0  # single-order judgments requested (both orders, re-asked ones included)
    failures: int = 0  # pairs dropped (None above)
    flips: int = 0  # pairs whose verdict changed with the order of the answers
    ties: int = 0  # single-order verdicts of exactly ½
    verdicts: int = 0  # single-order verdicts of the pairs kept
    disagreement: float = 0.0  # Σ over kept pairs of |P(a ≻ b) − (1 − P(b ≻ a))|
    seconds: float = 0.0  # the judge's own time (a pool: the slowest share)

    @staticmethod
    def merge(shares: list["Verdicts"]) -> "Verdicts":
        """The shares of a pool, in order."""
        total = {name: sum(getattr(v, name) for v in shares)
                 for name in ("pairs", "asked", "failures", "flips", "ties", "verdicts", "disagreement")}
        return Verdicts([p for v in shares for p in v.probabilities], **total,
                        seconds=max((v.seconds for v in shares), default=0.0))

    def metrics(self) -> dict:
        """``judge_failures``, ``judge_position_flip`` (share of kept pairs), ``judge_tie_rate`` (share
        of single-order verdicts), ``judge_disagreement`` (mean over kept pairs)."""
        kept = self.pairs - self.failures
        return {"judge_pairs": self.pairs, "judge_failures": self.failures,
                "judge_position_flip": self.flips / kept if kept else None,
                "judge_tie_rate": self.ties / self.verdicts if self.verdicts else None,
                "judge_disagreement": self.disagreement / kept if kept else None}


@dataclass(frozen=True)
class TrainBatch:
    """Tensors for one learner update; rows are responses (B), columns tokens (T)."""

    input_ids: torch.Tensor  # (B, T) prompt + response, right-padded
    attention_mask: torch.Tensor  # (B, T) 1 on real tokens
    response_mask: torch.Tensor  # (B, T) 1 on response tokens (the ones the loss sees)
    logp_old: torch.Tensor  # (B,) log π_t(a|s) summed over response tokens
    q_hat: torch.Tensor  # (B,) Q estimate
    baseline: torch.Tensor  # (B,) baseline b
    policy_version: torch.Tensor  # (B,) version that sampled each row
    # A training example is one or more rows: a whole conversation is its turns' rows, a
    # preference pair its chosen (side 0) and rejected (side 1) rows. Losses are per example.
    example: torch.Tensor  # (B,) index of the example each row belongs to
    side: torch.Tensor  # (B,) 0 = the example's (chosen) response, 1 = its rejected one
    q_hat_prev: torch.Tensor  # (B,) OMPO: win rate against the previous iterate's answers
    logp_ref: torch.Tensor  # (B,) log π_ref(a|s) of the KL penalty's reference (set by the learner)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device) -> "TrainBatch":
        """The same batch on ``device`` (itself where it is already there)."""
        return TrainBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def rows(self, index) -> "TrainBatch":
        return TrainBatch(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def shard(self, n: int) -> list["TrainBatch"]:
        """Split into ``n`` nearly equal shards of whole examples (data-parallel learners, minibatches)."""
        examples = torch.unique(self.example)
        return [self.rows(torch.isin(self.example, part)) for part in examples.tensor_split(n)]

    def example_index(self) -> torch.Tensor:
        """(B,) each row's example as 0..E−1, examples ordered by their index."""
        return torch.unique(self.example, return_inverse=True)[1]

    def per_example(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sums of a per-row quantity over each example's side-0 and side-1 rows: (E,), (E,).

        Examples are ordered by their index; a side with no rows sums to 0.
        """
        inverse = self.example_index()
        n = int(inverse.max()) + 1 if len(inverse) else 0
        out = values.new_zeros((2, n)).index_put((self.side, inverse), values, accumulate=True)
        return out[0], out[1]

    def first_of_example(self, values: torch.Tensor) -> torch.Tensor:
        """A per-example quantity stored on every row of the example: (E,), ordered like ``per_example``."""
        inverse = self.example_index()
        n = int(inverse.max()) + 1 if len(inverse) else 0
        return values.new_zeros(n).index_put((inverse,), values)


def _schema(cls):
    import pyarrow as pa

    types = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(),
             "list[int]": pa.list_(pa.int32()), "list[float]": pa.list_(pa.float32())}
    return pa.schema([(f.name, types[f.type]) for f in fields(cls)])


ROLLOUT_SCHEMA = _schema(Rollout)
COMPARISON_SCHEMA = _schema(Comparison)


def write_parquet(records: list, path: Path) -> None:
    """Write records of one type to a Parquet file (the folder is created)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not records:
        return
    seen: set = set()
    for r in records:  # exactly once: a shard holds one iteration, written whole (a re-run replaces it)
        if r.key in seen:
            raise RuntimeError(f"{path}: {type(r).__name__} {r.key} written twice")
        seen.add(r.key)
    schema = {Rollout: ROLLOUT_SCHEMA, Comparison: COMPARISON_SCHEMA}[type(records[0])]
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = {name: [getattr(r, name) for r in records] for name in schema.names}  # (no per-record copies)
    pq.write_table(pa.Table.from_pydict(columns, schema=schema), path)


class ParquetWriter:
    """``write_parquet`` off the caller's thread: shards are queued and written in order by one
    background thread. ``flush`` returns once every queued shard is on disk (a checkpoint flushes
    first, so the records it covers are there; a crash loses only shards after the last
    checkpoint, which a resume truncates and writes again). An error in the writer is raised by
    the next ``write``, ``flush`` or ``close``."""

    def __init__(self):
        import queue
        import threading

        self._queue: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name="parquet-writer", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                if self._error is None:
                    write_parquet(*item)
            except BaseException as e:  # (kept for the caller: a thread's error would be lost)
                self._error = e
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def write(self, records: list, path: Path) -> None:
        self._raise()
        if not self._thread.is_alive():
            raise RuntimeError("the Parquet writer is closed")
        self._queue.put((list(records), Path(path)))

    def flush(self) -> None:
        self._queue.join()
        self._raise()

    def __enter__(self) -> "ParquetWriter":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
        else:  # (the error in flight is the one to see)
            try:
                self.close()
            except Exception:
                pass

    def close(self) -> None:
        """Flush and stop the thread (idempotent)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._raise()


def read_parquet(folder: Path, cls) -> list:
    """All records of a folder of Parquet shards, in file order."""
    import pyarrow.parquet as pq

    out = []
    for path in sorted(Path(folder).glob("*.parquet")):
        out += [cls(**row) for row in pq.read_table(path).to_pylist()]
    return out
