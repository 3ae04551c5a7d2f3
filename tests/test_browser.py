"""The checkpoint dashboard in a real browser: headless Chromium (Debian's package) driven by Playwright.

Against a real ``airflow standalone``: a real DAG run of ``tk_ingest`` against the offline TK API, in which
one Zaak row carries HTML in a date field, so that item fails with an error text holding that HTML. Then,
as a user would: log in on the UI's login page, open *Browse -> Checkpoints* from the menu, see the run
with its progress bars and a SyncFeed cursor in the cursors table, open the DAG run's *Checkpoints* tab
and read the failed item's error as text (escaped: no element made of it, no script run). Screenshots go
to ``.local/artifacts/`` (``.ci/run`` prints where).

Playwright never downloads a browser here: it launches the system's ``chromium`` (``TK_CHROMIUM``,
default ``/usr/bin/chromium``; ``.ci/run`` installs it). Missing either, the test skips, or fails under CI.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from include.tk_replay.dataset import Dataset
from include.tk_replay.server import ReplayServer
from tests.loader_fixtures import ORIGINAL_SIX as NAMED
from tests.standalone_fixtures import running_standalone
from tests.test_dag import first_day

pytestmark = pytest.mark.standalone

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("TK_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / ".local" / "artifacts"
# Rendered as markup, this would make a bold element and run a script that sets the flag.
EVIL = "<b>boom</b> & <script>window.__tk_injected = 1</script>"
TIMEOUT_MS = 30_000


def browser_missing() -> str | None:
    """Why the browser test cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -r requirements.txt -c constraints.txt)"
    if not os.access(CHROMIUM, os.X_OK):
        return f"no chromium at {CHROMIUM} (apt-get install chromium; .ci/run installs it)"
    return None


@pytest.fixture(scope="module")
def chromium() -> str:
    reason = browser_missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but the browser test cannot run: {reason}", pytrace=False)
        pytest.skip(reason)
    return CHROMIUM


def dataset_with_html_error() -> tuple[Dataset, str]:
    """A small dataset in which one Zaak has HTML as its GewijzigdOp (a DATETIME): that item fails."""
    dataset = Dataset.generate(20, seed=7, sets=NAMED)
    bad = sorted(dataset.rows["Zaak"])[0]
    dataset.rows["Zaak"][bad]["GewijzigdOp"] = EVIL
    return dataset, bad.lower()  # the checkpoint's item key


def test_dashboard_in_chromium(chromium, neo4j_empty, tmp_path):
    from playwright.sync_api import expect, sync_playwright
    from tk_checkpoint import CheckpointManager, FeedCursors

    dataset, bad = dataset_with_html_error()
    checkpoints = tmp_path / "checkpoints"
    run_id = "manual__browser_test"
    with ReplayServer(dataset) as server:
        env = {
            "TK_API_BASE_URL": server.url,
            "TK_CHECKPOINT_BASE": str(checkpoints),
            "TK_TASK_RETRIES": "0",
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",  # only the run this test triggers
        }
        with running_standalone(tmp_path / "airflow", env) as airflow:
            # the run succeeds with one failed item on record: fail_on_item_errors off, and a reconcile
            # tolerance above the one item's share of Zaak
            conf = {
                "start_date": first_day(dataset),
                "window_days": 3660,
                "fail_on_item_errors": False,
                "reconcile_tolerance": 2 / len(dataset.rows["Zaak"]),
            }
            airflow.airflow("dags", "trigger", "tk_ingest", "--conf", json.dumps(conf), "-r", run_id)
            airflow.api("PATCH", "/dags/tk_ingest", json={"is_paused": False}).raise_for_status()
            assert airflow.wait_for_run("tk_ingest", run_id, timeout=300) == "success"
            zaken = CheckpointManager(str(checkpoints)).read_loader(run_id, "load_zaken.0")
            # what the page must show: the one failure, its error holding the markup
            assert set(zaken.failed) == {bad} and EVIL in zaken.failed[bad]["error"]
            # and a SyncFeed cursor of tk_sync's, shown below the runs
            FeedCursors(str(checkpoints)).advance("Persoon", 750, run_id=run_id, head_skiptoken=1000)

            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium)
                try:
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    page.set_default_timeout(TIMEOUT_MS)
                    expect.set_options(timeout=TIMEOUT_MS)

                    page.goto(f"{airflow.url}/auth/login")
                    page.get_by_label("Username").fill("admin")
                    page.get_by_label("Password").fill(airflow.password)
                    page.get_by_role("button", name="Sign in").click()

                    # Browse -> Checkpoints: the plugin's nav view, the dashboard in an iframe
                    page.get_by_role("button", name="Browse", exact=True).click()
                    page.get_by_role("menuitem", name="Checkpoints", exact=True).click()
                    page.wait_for_url("**/plugin/tk-checkpoints")
                    runs = page.frame_locator("iframe[title='Checkpoints']")
                    expect(runs.locator("h1")).to_have_text("Checkpoints")
                    row = runs.locator("tr", has=runs.get_by_role("link", name=run_id, exact=True))
                    expect(row.locator(".state")).to_have_text("completed")
                    expect(row.locator(".bar > span")).to_have_count(1)
                    n = len(dataset.rows["Zaak"])  # all but the bad one processed, a bar per loader
                    zaak_row = runs.locator("tr.loader", has_text="load_zaken.0").filter(
                        has_text=f"{n - 1} / {n}"
                    )
                    expect(zaak_row.locator(".bar > span")).to_be_visible()
                    heading = "SyncFeed cursors: 1 type, 1 behind the head"
                    expect(runs.locator("h2#cursors")).to_have_text(heading)
                    cursor = runs.locator("tr.cursor", has_text="Persoon")
                    expect(cursor.locator("td.num")).to_have_text(["750", "1,000", "250"])
                    page.screenshot(path=str(ARTIFACTS / "dashboard-runs.png"))

                    # the DAG run's Checkpoints tab: the plugin's dag_run view
                    page.goto(f"{airflow.url}/dags/tk_ingest/runs/{run_id}")
                    page.get_by_role("link", name="Checkpoints", exact=True).click()
                    page.wait_for_url(re.compile(r"/runs/.+/plugin/tk-checkpoints-run$"))
                    detail = page.frame_locator("iframe[title='Checkpoints']")
                    expect(detail.locator("h1")).to_have_text(f"Run {run_id}")
                    failure = detail.locator("tr", has=detail.locator("code", has_text=bad))
                    error = failure.locator("pre")
                    expect(error).to_contain_text(EVIL)  # the markup shown as text, verbatim
                    assert error.locator("*").count() == 0  # no element made of it
                    assert detail.locator("script").count() == 0
                    assert error.evaluate("() => window.__tk_injected") is None  # and nothing ran
                    error.scroll_into_view_if_needed()
                    shot = ARTIFACTS / "dashboard.png"
                    page.screenshot(path=str(shot))
                    assert shot.stat().st_size > 0
                    print(f"screenshot: {shot}")
                finally:
                    browser.close()
