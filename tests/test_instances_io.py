import json

import pytest
import torch

from noco.errors import DataError, NocoError
from noco.io import atomic_write_json, load_checkpoint, read_json
from noco.labels.instances import Instances, read_instances, write_instances

CLASSES = ["A", "B"]


def test_roundtrip(tmp_path):
    dets = {
        "v1": Instances.create([[0.0, 1.5], [2.0, 3.25]], [0, 1], [0.9, 0.4], [1.0, 0.5]),
        "v2": Instances.empty(),
    }
    p = write_instances(tmp_path / "r.json", dets, CLASSES)
    back = read_instances(p, CLASSES)
    assert set(back) == {"v1", "v2"}
    assert torch.allclose(back["v1"].segments, dets["v1"].segments)
    assert back["v1"].labels.tolist() == [0, 1]
    assert torch.allclose(back["v1"].weights, torch.tensor([1.0, 0.5]))
    assert len(back["v2"]) == 0


def test_weight_defaults_to_one_and_score_optional(tmp_path):
    p = tmp_path / "l.json"
    p.write_text(json.dumps({"results": {"v": [{"segment": [1, 2], "label": "B"}]}}))
    with pytest.raises(DataError, match="missing field 'score'"):
        read_instances(p, CLASSES)
    got = read_instances(p, CLASSES, require_score=False)["v"]
    assert got.scores.tolist() == [1.0] and got.weights.tolist() == [1.0]


def test_malformed_entries_all_reported(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps({"results": {"v": [
        {"segment": [1], "label": "A", "score": 1},
        {"segment": [1, 2], "label": "A"},
        {"segment": [3, 2], "label": "A", "score": 0.3},
    ]}}))
    with pytest.raises(DataError) as e:
        read_instances(p, CLASSES)
    msg = str(e.value)
    assert "entry 0" in msg and "entry 1" in msg and "entry 2" in msg and "bad.json" in msg


def test_unknown_labels_and_videos_counted(tmp_path):
    p = tmp_path / "r.json"
    p.write_text(json.dumps({"results": {
        "v": [{"segment": [1, 2], "label": "Z", "score": 1}, {"segment": [1, 2], "label": "A", "score": 1}],
        "other": [{"segment": [1, 2], "label": "A", "score": 1}],
    }}))
    msgs = []
    got = read_instances(p, CLASSES, videos=["v"], warn=msgs.append)
    assert len(got["v"]) == 1 and "other" not in got
    assert any("1 detections whose label" in m for m in msgs)
    assert any("1 videos outside" in m for m in msgs)


def test_read_json_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_json(tmp_path / "nope.json")
    (tmp_path / "e.json").write_text("  ")
    with pytest.raises(DataError, match="empty"):
        read_json(tmp_path / "e.json")
    (tmp_path / "b.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(DataError, match="not UTF-8"):
        read_json(tmp_path / "b.json")
    (tmp_path / "j.json").write_text("{nope")
    with pytest.raises(DataError, match="not valid JSON"):
        read_json(tmp_path / "j.json")


def test_atomic_write_leaves_no_temp(tmp_path):
    atomic_write_json(tmp_path / "x.json", {"a": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_objects_refused(tmp_path):
    p = tmp_path / "evil.pt"
    torch.save({"x": _Evil()}, p)
    with pytest.raises(NocoError, match="refused"):
        load_checkpoint(p)
    torch.save({"w": torch.ones(2)}, tmp_path / "ok.pt")
    assert torch.equal(load_checkpoint(tmp_path / "ok.pt")["w"], torch.ones(2))
