"""IdSet (compact processed ids) and the streamed snapshot: the same answers as a set of strings."""

from __future__ import annotations

import gzip
import json
import random
import threading
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tk_checkpoint import CheckpointManager, CorruptCheckpointError, LoaderCheckpoint
from tk_checkpoint import fileformat as ff
from tk_checkpoint.idset import IdSet, guid_key, guids_json, parse_guids_json

RUN = "manual__2026-11-27T22:11:54.123+00:00"


def guids(n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n)]


def test_guid_key_accepts_only_lower_case_guid_strings():
    g = "28e3a47e-1c0b-4d4e-9a8f-0123456789ab"
    assert guid_key(g) == bytes.fromhex(g.replace("-", ""))
    for other in (
        g.upper(),
        g[:-1],
        g + "0",
        g.replace("-", "_"),
        "28e3a47e-1c0b-4d4e-9a8f-0123456789a ",
        " 8e3a47e-1c0b-4d4e-9a8f-0123456789ab",
        "28e3a47e-1c0b-4d4e-9a8f-0123-56789ab",
        "28e3a47g-1c0b-4d4e-9a8f-0123456789ab",
        "item-5",
        "",
    ):
        assert guid_key(other) is None, other


def test_idset_behaves_as_a_set_of_strings():
    items = guids(20_000) + [f"item-{n}" for n in range(50)] + ["ABCDEF01-1111-2222-3333-444444444444"]
    ids, model = IdSet(), set()
    for n, item in enumerate(items):
        assert ids.add_new(item) == (item not in model)
        model.add(item)
        if n % 1000 == 0:
            assert not ids.add_new(items[n // 2])
            assert len(ids) == len(model)
    assert len(ids) == len(model) and ids == model and model == ids and model <= ids and ids >= model
    assert set(ids) == model and sorted(ids) == sorted(model)
    assert all(item in ids for item in items)
    assert not any(item in ids for item in guids(3000, seed=2))
    assert "abcdef01-1111-2222-3333-444444444444" not in ids  # another string than the upper-case one
    assert 5 not in ids and None not in ids
    text = b"".join(ids.json_chunks())
    listed = json.loads(b"[" + text + b"]")
    assert len(listed) == len(model) and set(listed) == model
    guid_part = [i for i in listed if guid_key(i) is not None]
    assert guid_part == sorted(guid_part) and listed[: len(guid_part)] == guid_part  # GUIDs first, ascending


def test_bulk_update_and_small_update_agree():
    items = [*guids(10_000), "x", "y", *guids(10, seed=1)]  # repeats
    bulk, one_by_one = IdSet(), IdSet()
    bulk.update(items)
    for item in items:
        one_by_one.add(item)
    assert bulk == one_by_one == set(items)


def test_guid_json_round_trip():
    keys = sorted({bytes.fromhex(g.replace("-", "")) for g in guids(5000)})
    blob = b"".join(keys)
    text = guids_json(blob)
    assert json.loads(b"[" + text + b"]") == [str(uuid.UUID(bytes=k)) for k in keys]
    assert parse_guids_json(text + b",") == blob
    assert parse_guids_json(text) is None  # no comma after the last
    broken = bytearray(text + b",")
    broken[39 * 7 + 3] = ord("G")
    assert parse_guids_json(bytes(broken)) is None


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(guids(50, seed=3)),
            st.text(max_size=40),
            st.uuids().map(str),
            st.uuids().map(lambda u: str(u).upper()),
        ),
        max_size=200,
    )
)
def test_snapshot_stream_round_trip(items):
    ids = IdSet()
    ids.update(items)
    head = {"schema_version": 2, "kind": ff.LOADER_KIND, "state": "in_progress", "processed_count": len(ids)}
    data = b"".join(ff.loader_document_chunks(head, ids))
    assert set(json.loads(data)["processed_ids"]) == set(items)
    for threshold in (-1, 0):
        stored = b"".join(ff.PackedStream(ff.loader_document_chunks(head, ids), threshold))
        for size in (7, 1 << 20):
            chunks = (stored[i : i + size] for i in range(0, len(stored), size))
            doc, back, raw_size = ff.read_loader_stream(chunks)
            assert back == set(items) and raw_size == len(data) and doc["processed_count"] == len(ids)


def _checkpoint_with(tmp_path: Path, items: list[str], **settings) -> CheckpointManager:
    mgr = CheckpointManager(tmp_path, **settings)
    mgr.start_new_run(RUN)
    with LoaderCheckpoint(mgr, "load_zaak") as cp:
        cp.mark_processed_many(items)
        cp.complete()
    return mgr


@pytest.mark.parametrize("gzip_threshold", [-1, 1000])
def test_guid_snapshot_is_plain_json_sorted_and_reopens(tmp_path, gzip_threshold):
    items = [*guids(30_000), "item-1", "Z"]
    mgr = _checkpoint_with(tmp_path, items, gzip_threshold=gzip_threshold)
    folder = tmp_path / RUN / "loaders"
    if gzip_threshold < 0:
        data = (folder / "load_zaak.json").read_bytes()
    else:
        data = gzip.decompress((folder / "load_zaak.json.gz").read_bytes())
    doc = json.loads(data)
    assert doc["schema_version"] == 2 and doc["processed_count"] == len(items)
    assert doc["processed_ids"][:30_000] == sorted(items[:30_000]) and doc["processed_ids"][30_000:] == [
        "Z",
        "item-1",
    ]
    assert mgr.read_loader(RUN, "load_zaak").processed == set(items)
    cp = LoaderCheckpoint(mgr, "load_zaak")
    assert all(cp.is_processed(i) for i in items[::97]) and not cp.is_processed(guids(1, seed=9)[0])
    cp.close()


def test_older_unsorted_snapshots_still_open(tmp_path):
    """A version 2 snapshot of the previous engine (ids in set order, GUIDs and others mixed)."""
    items = guids(12_000) + [f"item-{n}" for n in range(30)]
    random.Random(4).shuffle(items)
    folder = tmp_path / RUN / "loaders"
    folder.mkdir(parents=True)
    doc = {
        "schema_version": 2,
        "kind": ff.LOADER_KIND,
        "run_id": RUN,
        "loader": "load_zaak",
        "state": "in_progress",
        "processed_count": len(items),
        "journal_seq": 0,
        "tries": [],
        "failed_items": {},
        "processed_ids": items,
    }
    (folder / "load_zaak.json").write_bytes(ff.encode_document(doc, big_key="processed_ids"))
    CheckpointManager(tmp_path).start_new_run(RUN)
    assert CheckpointManager(tmp_path).read_loader(RUN, "load_zaak").processed == set(items)
    (folder / "load_zaak.json").write_text(json.dumps(doc))  # another layout: read the general way
    assert CheckpointManager(tmp_path).read_loader(RUN, "load_zaak").processed == set(items)


@pytest.mark.parametrize("damage", ["truncated-gzip", "truncated-plain", "bad-count", "trailing"])
def test_damaged_guid_snapshots_are_still_reported(tmp_path, damage):
    items = guids(5000)
    gz = damage == "truncated-gzip"
    mgr = _checkpoint_with(tmp_path, items, gzip_threshold=0 if gz else -1)
    snap = tmp_path / RUN / "loaders" / ("load_zaak.json.gz" if gz else "load_zaak.json")
    data = snap.read_bytes()
    if damage.startswith("truncated"):
        snap.write_bytes(data[: len(data) // 2])
    elif damage == "bad-count":
        snap.write_bytes(data.replace(b'"processed_count": 5000', b'"processed_count": 4999'))
    else:
        snap.write_bytes(data + b"x")
    with pytest.raises(CorruptCheckpointError, match="damaged"):
        mgr.read_loader(RUN, "load_zaak")


def test_readers_during_merges_always_find_added_ids():
    ids = IdSet()
    ids.update(guids(50_000, seed=5))
    probe = guids(20_000, seed=6)
    added = []
    errors = []
    done = threading.Event()

    def reader():
        while not done.is_set():
            for item in added[-50:]:
                if item not in ids:
                    errors.append(item)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for item in probe:
            ids.add(item)
            added.append(item)
    finally:
        done.set()
        thread.join()
    assert not errors and ids >= set(probe)
