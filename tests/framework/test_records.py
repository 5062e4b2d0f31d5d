"""Records: a shard holds each rollout and comparison once (issue 15); the background writer (issue 20)."""

import pyarrow.parquet as pq
import pytest

from framework.records import Comparison, ParquetWriter, Rollout, read_parquet, write_parquet


def rollout(sample: int, branch_of: int = -1) -> Rollout:
    return Rollout("c0", 0, sample, 3, "[]", [1], [2], [-0.5], "a", policy_version=3, generator=0,
                   branch_of=branch_of)


def test_a_shard_refuses_a_record_written_twice(tmp_path):
    rows = [rollout(0), rollout(1), rollout(1, branch_of=0)]  # a continuation is another record
    write_parquet(rows, tmp_path / "ok.parquet")
    assert pq.read_table(tmp_path / "ok.parquet").num_rows == 3
    with pytest.raises(RuntimeError, match=r"Rollout \(3, 'c0', 0, 1, -1\) written twice"):
        write_parquet([*rows, rollout(1)], tmp_path / "twice.parquet")
    judged = [Comparison("c0", 0, 3, 0, 1, 0.5, "rule"), Comparison("c0", 0, 3, 0, 1, 0.5, "rule", "previous")]
    write_parquet(judged, tmp_path / "judged.parquet")  # against the previous iterate: another pair
    with pytest.raises(RuntimeError, match="written twice"):
        write_parquet(judged + judged[:1], tmp_path / "judged_twice.parquet")
    assert not (tmp_path / "twice.parquet").exists() and not (tmp_path / "judged_twice.parquet").exists()


def test_the_background_writer_has_every_queued_shard_on_disk_after_a_flush_and_reports_its_errors(tmp_path):
    writer = ParquetWriter()
    for i in range(5):
        writer.write([rollout(0), rollout(1)], tmp_path / "rollouts" / f"iter_{i:06d}.parquet")
    writer.flush()  # (what a checkpoint does first)
    assert len(read_parquet(tmp_path / "rollouts", Rollout)) == 10
    writer.write([rollout(1), rollout(1)], tmp_path / "bad.parquet")  # a shard that cannot be written
    with pytest.raises(RuntimeError, match="written twice"):
        writer.flush()
    writer.write([rollout(2)], tmp_path / "after.parquet")  # the writer goes on after a reported error
    writer.close()
    assert (tmp_path / "after.parquet").exists() and not (tmp_path / "bad.parquet").exists()
    with pytest.raises(RuntimeError, match="closed"):
        writer.write([rollout(3)], tmp_path / "late.parquet")
