"""bag2dataset on damaged and foreign bags: CRC checks, all bags first, no half-written output, prompts."""
from __future__ import annotations

import logging

import numpy as np
import pyarrow.parquet as pq
import pytest

from pi0_ros.data import bagio
from pi0_ros.data.bag2dataset import convert
from pi0_ros.data.bag_read import ConversionError
from pi0_ros.data.dataset import Pi0Dataset
from pi0_ros.data.synthetic import write_synthetic_bag

EMB = "ur5e"


def _leftovers(parent, name):
    return sorted(p.name for p in parent.iterdir() if p.name == name or p.name.startswith(f".{name}."))


def _damage(mcap, seed=0, n=64 * 1024):
    """Overwrite n random bytes in the middle of the file (inside the first chunk)."""
    data = bytearray(mcap.read_bytes())
    at = len(data) // 3
    data[at:at + n] = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()
    mcap.write_bytes(bytes(data))
    return at


def test_synthetic_bags_carry_chunk_crcs(tmp_path):
    bag = write_synthetic_bag(tmp_path / "b", EMB)
    counts = bagio.verify_bag(bag)
    assert counts["chunks"] >= 1 and counts["chunks_without_crc"] == 0


def test_corrupted_mcap_names_bag_and_offset_and_leaves_nothing(tmp_path, capsys):
    bag = write_synthetic_bag(tmp_path / "bad_bag", EMB, duration=3.0)
    _damage(next(bag.glob("*.mcap")))
    out_parent = tmp_path / "out"
    out_parent.mkdir()
    with pytest.raises(ConversionError, match=r"bad_bag.*byte offset \d+"):
        convert([bag], EMB, out_parent / "ds", progress=False)
    assert _leftovers(out_parent, "ds") == []
    from pi0_ros.cli import main as cli_main

    assert cli_main(["bag2dataset", str(bag), "--embodiment", EMB, "--out", str(out_parent / "ds"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "damaged bag" in err and "bad_bag" in err and "checksum mismatch" in err and "Traceback" not in err
    assert _leftovers(out_parent, "ds") == []


def test_bag_without_crcs_converts_with_a_warning(tmp_path, caplog, monkeypatch):
    """Bags from writers that leave the chunk CRC at 0 (rosbags' own writer) cannot be checked: say so."""
    from rosbags.rosbag2 import Writer

    monkeypatch.setattr(bagio, "open_writer", lambda path, storage="mcap": Writer(path, version=9,
                                                                                 storage_plugin=bagio.storage_plugin(storage)))
    bag = write_synthetic_bag(tmp_path / "nocrc", EMB)
    assert bagio.verify_bag(bag)["chunks_without_crc"] >= 1
    with caplog.at_level(logging.WARNING):
        assert convert([bag], EMB, tmp_path / "ds", progress=False)["episodes"] == 1
    assert "carry no CRC" in caplog.text


def test_bad_bag_after_a_good_one_writes_nothing(tmp_path):
    bags = tmp_path / "bags"
    write_synthetic_bag(bags / "episode_000000", EMB, seed=0)
    bad = write_synthetic_bag(bags / "episode_000001", EMB, seed=1)
    _damage(next(bad.glob("*.mcap")))
    with pytest.raises(ConversionError, match="episode_000001"):
        convert([bags], EMB, tmp_path / "ds", progress=False)
    assert _leftovers(tmp_path, "ds") == []
    # A later, unreadable topic (not corruption) in the second bag: also nothing written.
    (bags / "episode_000001").rename(tmp_path / "moved")
    write_synthetic_bag(bags / "episode_000001", EMB, seed=1, skip_topics=["/camera/wrist/image_raw"])
    with pytest.raises(ConversionError, match="episode_000001.*camera/wrist"):
        convert([bags], EMB, tmp_path / "ds", progress=False)
    assert _leftovers(tmp_path, "ds") == []


def test_failure_while_writing_removes_the_partial_output(tmp_path, monkeypatch):
    bag = write_synthetic_bag(tmp_path / "b", EMB)
    from pi0_ros.data import lerobot_writer

    def boom(*a, **k):
        raise ConversionError("disk full")
    monkeypatch.setattr(lerobot_writer.DatasetWriter, "finish", boom)
    with pytest.raises(ConversionError, match="disk full"):
        convert([bag], EMB, tmp_path / "ds", progress=False)
    assert _leftovers(tmp_path, "ds") == []


def test_bag_directory_without_metadata_points_at_reindex(tmp_path):
    bag = write_synthetic_bag(tmp_path / "b", EMB)
    (bag / "metadata.yaml").unlink()
    with pytest.raises(ConversionError, match=r"ros2 bag reindex"):
        convert([bag], EMB, tmp_path / "ds", progress=False)


def test_prompt_change_mid_bag_starts_a_new_episode(tmp_path, caplog):
    bag = write_synthetic_bag(tmp_path / "b", EMB, duration=4.0, episode_json=False, prompt="pick up the red cube",
                              prompt_changes=[(2.0, "put it in the box")])
    with caplog.at_level(logging.WARNING):
        summary = convert([bag], EMB, tmp_path / "ds", progress=False)
    assert summary["episodes"] == 2
    assert "prompt changes 1 time" in caplog.text
    ds = Pi0Dataset(tmp_path / "ds", chunk_size=4, load_images=False)
    eps = pq.read_table(tmp_path / "ds" / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()
    assert [e["tasks"] for e in eps] == [["pick up the red cube"], ["put it in the box"]]
    assert ds[0]["prompt"] == "pick up the red cube" and ds[len(ds) - 1]["prompt"] == "put it in the box"
    # The same prompt repeated is not a change.
    bag2 = write_synthetic_bag(tmp_path / "b2", EMB, episode_json=False, prompt_changes=[(1.0, "pick up the red cube")])
    assert convert([bag2], EMB, tmp_path / "ds2", progress=False)["episodes"] == 1


def test_explicit_prompt_wins_and_says_so(tmp_path, caplog):
    bag = write_synthetic_bag(tmp_path / "b", EMB, prompt="pick up the red cube")
    with caplog.at_level(logging.WARNING):
        convert([bag], EMB, tmp_path / "ds", prompt="wipe the table", progress=False)
    assert "--prompt 'wipe the table' overrides the bag's prompt 'pick up the red cube'" in caplog.text
    assert Pi0Dataset(tmp_path / "ds", chunk_size=2, load_images=False)[0]["prompt"] == "wipe the table"


def test_gap_warning_once_per_topic(tmp_path, caplog):
    bag = write_synthetic_bag(tmp_path / "b", EMB, duration=4.0, gaps=[(1.5, 2.5)])
    with caplog.at_level(logging.WARNING):
        convert([bag], EMB, tmp_path / "ds", progress=False)
    lines = [r.getMessage() for r in caplog.records if "splitting the episode" in r.getMessage()]
    topics = [ln.split(" on ")[1].split(" at ")[0] for ln in lines]
    assert len(topics) == len(set(topics))  # ur5e: 7 dims on /joint_states -> one warning, not 7
