"""Property: random mark / fail / save / compact / reopen sequences read back as a simple model says."""

from __future__ import annotations

import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tk_checkpoint import CheckpointManager, LoaderCheckpoint

RUN = "manual__2026-11-27T22:11:54.123+00:00"
ids = st.integers(min_value=0, max_value=40).map(lambda n: f"id-{n}")
ops = st.one_of(
    st.tuples(st.just("mark"), ids),
    st.tuples(st.just("mark_many"), st.lists(ids, max_size=8)),
    st.tuples(st.just("fail"), ids),  # mark_failed, then save_progress
    st.tuples(st.just("fail_pending"), ids),  # mark_failed alone: saved by the next save
    st.tuples(st.just("save"), st.none()),
    st.tuples(st.just("compact"), st.none()),
    st.tuples(st.just("crash"), st.none()),  # reopen after losing what was not saved
    st.tuples(st.just("close"), st.none()),  # reopen after a clean close
)


class Model:
    """What a reader must see: saved marks, plus pending marks until they are saved or lost."""

    def __init__(self) -> None:
        self.processed: set[str] = set()
        self.failed: dict[str, int] = {}  # id -> attempts
        self.saved = (set(), {})

    def mark(self, item: str) -> None:
        self.processed.add(item)
        self.failed.pop(item, None)

    def fail(self, item: str) -> None:
        if item not in self.processed:
            self.failed[item] = self.failed.get(item, 0) + 1

    def save(self) -> None:
        self.saved = (set(self.processed), dict(self.failed))

    def crash(self) -> None:
        self.processed, self.failed = set(self.saved[0]), dict(self.saved[1])


def _check(cp: LoaderCheckpoint, model: Model) -> None:
    assert cp._w.state.processed == model.processed
    assert {k: v["attempts"] for k, v in cp.failed_items().items()} == model.failed
    assert cp.processed_count == len(model.processed) and cp.failed_count == len(model.failed)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(ops, max_size=40), st.sampled_from([0, 300]), st.sampled_from([(1 << 20, 1 << 20), (150, 250)])
)
def test_random_operations_match_the_model(sequence, gzip_threshold, compaction):
    min_bytes, _ = compaction
    with tempfile.TemporaryDirectory() as tmp:
        mgr = CheckpointManager(
            tmp, gzip_threshold=gzip_threshold, compact_min_bytes=min_bytes, save_interval=0
        )
        mgr.start_new_run(RUN)
        cp = LoaderCheckpoint(mgr, "load_zaak")
        model = Model()
        for op, arg in sequence:
            if op == "mark":
                cp.mark_processed(arg)
                model.mark(arg)
            elif op == "mark_many":
                cp.mark_processed_many(arg)
                for item in arg:
                    model.mark(item)
            elif op in ("fail", "fail_pending"):
                cp.mark_failed(arg, f"error of {arg}")
                model.fail(arg)
                if op == "fail":  # a failure is saved by the next save (here at once), not by itself
                    cp.save_progress()
                    model.save()
            elif op in ("save", "compact"):
                cp.save_progress() if op == "save" else cp.compact()
                model.save()
            else:
                if op == "crash":
                    cp._w.abandon()
                    model.crash()
                else:
                    cp.close()
                    model.save()
                reader = CheckpointManager(tmp).read_loader(RUN, "load_zaak")
                assert reader.processed == model.processed
                assert {k: v["attempts"] for k, v in reader.failed.items()} == model.failed
                cp = LoaderCheckpoint(mgr, "load_zaak")
            _check(cp, model)
        cp._w.abandon()
        model.crash()
        reopened = LoaderCheckpoint(CheckpointManager(tmp), "load_zaak", run_id=RUN)
        _check(reopened, model)
        reopened.complete()
        final = CheckpointManager(tmp).read_loader(RUN, "load_zaak")
        assert final.processed == model.processed and final.state == "completed"
