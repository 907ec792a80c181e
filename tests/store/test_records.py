"""UnitRecord (lth.store.records): the typed record of a finished unit, its JSON form, and what a
damaged result.json gives."""

from __future__ import annotations

import json

import pytest

from lth.config import get_preset
from lth.store import RunStore, StoreError, UnitRecord

OK = UnitRecord(0, 2, "reinit", 0.64, "ok", early_stop_iteration=400, early_stop_test_accuracy=0.91,
                early_stop_val_accuracy=0.92, min_val_loss=0.25, final_test_accuracy=0.9, final_val_loss=0.3,
                final_iteration=1000, train_seconds=1.5)
FAILED = UnitRecord(1, 0, "ticket", 1.0, "failed", error="training loss became nan before iteration 50")


@pytest.mark.parametrize("record", [OK, FAILED], ids=["ok", "failed"])
def test_a_record_round_trips_through_its_json_form(record):
    d = record.to_dict()
    assert UnitRecord.from_dict(json.loads(json.dumps(d))) == record
    assert None not in d.values()  # fields that do not apply are left out, not null


def test_a_failed_record_has_its_error_and_no_metrics():
    assert FAILED.to_dict() == {"trial": 1, "level": 0, "branch": "ticket", "weights_remaining": 1.0,
                                "status": "failed", "error": "training loss became nan before iteration 50"}
    assert not FAILED.ok and OK.ok
    assert OK.key == (0, 2, "reinit") and FAILED.key == (1, 0, "ticket")


def test_records_are_immutable():
    with pytest.raises(AttributeError):
        OK.status = "failed"  # type: ignore[misc]


def test_bad_records_are_refused_naming_the_field():
    with pytest.raises(ValueError, match="unknown field.*accuracy"):
        UnitRecord.from_dict({**OK.to_dict(), "accuracy": 0.9})
    d = OK.to_dict()
    del d["weights_remaining"]
    with pytest.raises(ValueError, match="missing field.*weights_remaining"):
        UnitRecord.from_dict(d)
    with pytest.raises(ValueError, match="expected a JSON object"):
        UnitRecord.from_dict([1, 2])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="status 'done': must be one of ok, failed"):
        UnitRecord(0, 0, "ticket", 1.0, "done")


@pytest.mark.parametrize("content, problem", [
    (b"{not json", "is not valid JSON"), (b"\xff\xfe", "is not valid JSON"),
    (b"[1, 2]", "is not a valid unit record"), (b'{"trial": 0}', "is not a valid unit record"),
    (json.dumps(OK.to_dict()).encode(), "no checksums"),
], ids=["torn", "not-utf8", "not-an-object", "missing-fields", "no-checksums"])
def test_a_garbage_result_json_is_a_store_error_naming_the_file_and_the_unit_is_not_done(tmp_path, content, problem):
    cfg = get_preset("digits-quick")
    with RunStore.open(cfg, root=tmp_path) as store:
        store.finish_unit(FAILED)
        path = store.unit_dir(1, 0, "ticket") / "result.json"
        assert store.record(1, 0, "ticket") == FAILED and store.is_done(1, 0, "ticket")
        path.write_bytes(content)
        with pytest.raises(StoreError, match=problem) as e:
            store.record(1, 0, "ticket")
        assert str(path) in str(e.value)
        assert not store.is_done(1, 0, "ticket")
        assert store.records() == []  # a damaged unit is never reported
        assert problem in store.damaged_units()[(1, 0, "ticket")][0]
