"""``tk-api probe`` over real HTTP against the offline server (include.tk_replay.ReplayServer).

What a user with internet would attach to an issue must say what the server did: which versions
answer, the model against the v4/2.0 reference, counts, paging as measured, the loaders' requests, and
never a credential. Each test compares the report with what the server is known to serve (its dataset,
its profiles, its drift), not with figures written down here.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from include.loaders.api_metadata import ODataSchema, reference_schema
from include.loaders.api_profiles import PROFILES
from include.loaders.entities import ENTITIES
from include.loaders.probe import ProbeSettings, run_probe
from include.loaders.probe_report import write_report
from include.loaders.tk_api_cli import main
from include.tk_replay import Dataset, FaultConfig, ReplayServer

ROOT = Path(__file__).resolve().parent.parent
SETS = tuple(ENTITIES)  # the probe asks about every entity of the table


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    # more rows than a page of either version, so that both must page
    return Dataset.generate(max(p.page_size for p in PROFILES.values()) + 60, seed=7)


@pytest.fixture(scope="module")
def both(dataset, tmp_path_factory):
    """One probe of a server serving both versions (as it does today): (server, exit status, stdout,
    report folder, report.json, report.md)."""
    out = tmp_path_factory.mktemp("probe") / "report"
    with ReplayServer(dataset) as server:
        proc = subprocess.run(
            [sys.executable, "-m", "include.loaders.probe", "--base-url", server.url, "--out", str(out)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'plugins'}"},
            timeout=120,
        )
        yield (
            server,
            proc,
            out,
            json.loads((out / "report.json").read_text()),
            (out / "report.md").read_text(),
        )


def version(report: dict, name: str) -> dict:
    return next(v for v in report["versions"] if v["version"] == name)


def test_both_versions_answer_and_the_entry_point_says_where_the_report_is(both):
    server, proc, out, report, md = both
    assert proc.returncode == 0, proc.stderr
    assert set(report["answering"]) == set(PROFILES)
    line = proc.stdout.strip()
    assert "\n" not in line and line.endswith(f"report: {out / 'report.md'}")
    assert all(f"{name} answers" in line for name in PROFILES)
    # progress on stderr, one line per request group and version
    assert all(f"{name}: paging" in proc.stderr for name in PROFILES)
    # the summary comes first, then a section per version
    sections = [ln for ln in md.splitlines() if ln.startswith("## ")]
    assert sections[0] == "## Summary" and all(f"## {n}" in sections for n in PROFILES)
    assert server.url in md


def test_v5_known_renames_and_additions_are_marked_as_known(both):
    _, _, _, report, md = both
    v5 = PROFILES["v5"]
    diff = version(report, "v5")["diff"]
    doc = diff["sets"]["Document"]
    reference_props = reference_schema().entity_sets["Document"].properties
    expected = {c: s for c, s in v5.renames_for("Document").items() if c in reference_props}
    assert doc["known_renames"] == expected and doc["known_renames"]["DocumentNummer"] == "Nummer"
    assert doc["missing"] == [] and not set(expected.values()) & set(doc["new"])
    assert "| Document | renamed (known to the profile) | DocumentNummer | Nummer |" in md
    act = diff["sets"]["Activiteit"]
    added = dict(v5.added_properties["Activiteit"])
    assert act["new"] == added and act["known_new"] == list(added)
    name, edm = next(iter(added.items()))
    assert f"| Activiteit | new (known to the profile) |  | {name} ({edm}) |" in md
    # the reference version serves the reference model
    assert version(report, "v4/2.0")["diff"]["sets"] == {}
    assert version(report, "v4/2.0")["diff"]["sets_served"] == len(reference_schema().entity_sets)


def test_counts_equal_the_datasets(both):
    server, _, _, report, _ = both
    for name in PROFILES:
        counts = version(report, name)["counts"]
        assert counts == {s: len(server.dataset.rows[s]) for s in SETS}


def test_paging_facts_are_the_servers(both):
    server, _, _, report, md = both
    for name, profile in server.profiles.items():
        paging = version(report, name)["paging"]
        size = len(server.dataset.rows[paging["entity_set"]])
        assert paging["set_count"] == size > profile.page_size
        assert paging["first_page_rows"] == profile.page_size
        assert paging["next_link"] and paging["next_link_form"] == "$skiptoken=Id-…"
        assert paging["second_page_rows"] == min(profile.page_size, size - profile.page_size)
        assert paging["second_page_overlap"] == 0
        assert paging["default_order"] == "Id (SQL Server uniqueidentifier order)"
        assert paging["top_cap"] == profile.max_top
        trials = {t["top"]: t for t in paging["top_trials"]}
        for top, trial in trials.items():
            refused = profile.max_top is not None and top > profile.max_top
            assert trial["status"] == (400 if refused else 200)
            if refused:
                assert str(profile.max_top) in trial["message"]
            else:
                assert trial["rows"] == min(top, profile.page_size)
    assert f"`$top` cap: {PROFILES['v5'].max_top} (named in the server's HTTP 400 message)" in md


def test_the_loaders_requests_answer_and_none_uses_skip(both):
    server, _, _, report, md = both
    for name, profile in server.profiles.items():
        every = version(report, name)["requests"]
        assert not any("$skip=" in r["url"] for r in every)
        reqs = [r for r in every if not r["kind"].startswith("paging: $top")]  # v5 refuses $top > 100
        assert reqs and all(r["status"] == 200 and r["error"] is None for r in reqs), name
        kinds = {(r["kind"].split(":")[0], r["entity_set"]) for r in reqs}
        for s in SETS:
            assert {("window", s), ("window count", s), ("keyset", s)} <= kinds
            if server.dataset.rows[s]:
                assert ("get by key", s) in kinds
        window = next(r for r in reqs if r["kind"].startswith("window:") and r["entity_set"] == "Document")
        assert window["rows"] == profile.page_size
        assert profile.to_profile("Document", "DocumentNummer") in window["first_row"]
        counted = [r for r in reqs if r["kind"].startswith("window count")]
        assert all(r["count"] == len(server.dataset.rows[r["entity_set"]]) for r in counted)
        nxt = [r for r in reqs if r["kind"].startswith("keyset: the next page")]
        assert {r["entity_set"] for r in nxt} == {s for s in SETS if len(server.dataset.rows[s]) > 100}
        assert all(r["rows"] and "ApiGewijzigdOp gt" in r["url"].replace("%20", " ") for r in nxt)
    assert "<details><summary>Their URLs</summary>" in md


def test_raw_metadata_files_are_written_and_parse(both):
    server, _, out, report, _ = both
    for name in PROFILES:
        v = version(report, name)
        written = ODataSchema.from_xml((out / v["metadata_file"]).read_bytes())
        assert written == ODataSchema.from_xml(server.metadata(name))


def test_a_drifted_rename_shows_as_likely_rename_and_the_old_name_as_missing(tmp_path):
    drift = {"Agendapunt": {"Activiteit_Id": "ActiviteitId"}}
    small = Dataset.generate(40, seed=3)  # smaller than a page: no nextLink needed
    with ReplayServer(small, drift=drift) as server:
        report = run_probe(ProbeSettings(base_url=server.url, sets=("Agendapunt",)))
    path = write_report(report, tmp_path / "out")
    md = path.read_text()
    for v in report.versions:
        d = v.diff.sets["Agendapunt"]
        assert d.missing == ["Activiteit_Id"] and d.likely_renames == {"Activiteit_Id": "ActiviteitId"}
        assert "ActiviteitId" in d.new
        window = next(e for e in v.requests if e.kind.startswith("window:"))
        assert window.status == 400 and "Activiteit_Id" in window.error
        assert v.paging.verdict.startswith(f"the whole set ({len(small.rows['Agendapunt'])} rows)")
    assert "| Agendapunt | missing (likely renamed) | Activiteit_Id | ActiviteitId |" in md
    assert "| Agendapunt | new (likely a rename) |  | ActiviteitId (Edm.Guid) |" in md


def test_credentials_are_used_but_written_nowhere(tmp_path, capsys):
    user, password = "probe-user", "s3cret-Pw_42"
    secrets = [password, f"{user}:{password}", base64.b64encode(f"{user}:{password}".encode()).decode()]
    out = tmp_path / "out"
    with ReplayServer(Dataset.generate(30, seed=1), basic_auth=(user, password)) as server:
        base = server.url.replace("http://", f"http://{user}:{password}@")
        code = main(["probe", "--base-url", base, "--out", str(out), "--sets", "Zaak,Document"])
        refused = main(
            ["probe", "--base-url", server.url, "--out", str(tmp_path / "without"), "--retries", "0"]
        )
    captured = capsys.readouterr()
    assert code == 0  # the server (basic_auth=) accepted them: every version answered
    report = json.loads((out / "report.json").read_text())
    assert set(report["answering"]) == set(PROFILES) and report["credentials"] is True
    sent = [r for v in report["versions"] for r in v["requests"]]
    assert not any(r["status"] == 401 for r in sent)
    assert all(r["status"] == 200 for r in sent if r["kind"].startswith(("window", "get by key", "count")))
    assert report["headers"]["Authorization"].startswith("Basic ***")
    files = list(out.iterdir())
    assert {f.name for f in files} >= {"report.md", "report.json"}
    for f in files:
        text = f.read_bytes().decode("utf-8", "replace")
        assert not any(s in text for s in secrets), f.name
    assert not any(s in captured.out + captured.err for s in secrets)
    # the same server without them: HTTP 401, no version answers
    assert refused == 2
    without = json.loads((tmp_path / "without" / "report.json").read_text())
    assert without["answering"] == [] and all("HTTP 401" in v["reason"] for v in without["versions"])


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nothing_answering_exits_2_with_a_report(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        ["probe", "--base-url", f"http://127.0.0.1:{_closed_port()}", "--out", str(out), "--retries", "0"]
    )
    assert code == 2
    report = json.loads((out / "report.json").read_text())
    assert report["answering"] == []
    assert all(v["reason"].startswith("connection refused") for v in report["versions"])
    md = (out / "report.md").read_text()
    assert "**No version answered.**" in md and all(f"**{n}**" in md for n in PROFILES)
    assert str(out / "report.md") in capsys.readouterr().out
    assert not list(out.glob("metadata-*.xml"))


def test_retries_are_bounded_and_reported(tmp_path):
    waits: list[float] = []
    always_500 = FaultConfig(error_rate=1.0, include_metadata=True)
    with ReplayServer(Dataset.generate(10, seed=2), faults=always_500) as server:
        settings = ProbeSettings(base_url=server.url, sets=("Zaak",), retries=2, backoff=0.5)
        report = run_probe(settings, sleep=waits.append)
    assert report.answering == []
    for v in report.versions:
        assert v.metadata.attempts == settings.retries + 1
        assert v.reason == "HTTP 500: An error has occurred."
    assert waits == [0.5, 1.0] * len(PROFILES)
    md = write_report(report, tmp_path).read_text()
    assert f"- Requests retried: {len(PROFILES)}:" in md


def test_a_429_retry_after_is_honoured_up_to_ten_backoffs():
    waits: list[float] = []
    throttle = FaultConfig(throttle_rate=1.0, retry_after=3, include_metadata=True)
    with ReplayServer(Dataset.generate(10, seed=2), faults=throttle) as server:
        settings = ProbeSettings(base_url=server.url, sets=("Zaak",), retries=1, backoff=0.2)
        report = run_probe(settings, sleep=waits.append)
    assert all(v.metadata.status == 429 and v.metadata.attempts == 2 for v in report.versions)
    assert waits == [min(throttle.retry_after, 10 * settings.backoff)] * len(PROFILES)


def test_a_timeout_is_reported_as_such_and_not_retried(tmp_path):
    hang = FaultConfig(hang_rate=1.0, hang_seconds=5, include_metadata=True)
    with ReplayServer(Dataset.generate(10, seed=2), faults=hang) as server:
        report = run_probe(ProbeSettings(base_url=server.url, sets=("Zaak",), timeout=0.3, retries=2))
    for v in report.versions:
        assert v.metadata.attempts == 1 and v.reason == "timeout: no answer within 0.3 s"
        assert v.metadata.seconds < 2


def test_a_base_url_with_a_version_path_probes_every_version(tmp_path):
    with ReplayServer(Dataset.generate(10, seed=2)) as server:
        report = run_probe(ProbeSettings(base_url=server.service_root("v4/2.0") + "/", sets=("Zaak",)))
        assert report.base_url == server.url
        assert set(report.answering) == set(PROFILES)


@pytest.mark.parametrize(
    "args",
    [
        ["--timeout", "0"],
        ["--timeout", "soon"],
        ["--retries", "-1"],
        ["--sets", " , "],
        ["--base-url", "ftp://example.org"],
        ["--sets", "Zaak;drop"],
        ["--no-such-option"],
    ],
)
def test_bad_arguments_exit_1(args, tmp_path, capsys):
    assert main(["probe", "--out", str(tmp_path / "o"), *args]) == 1
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_help_explains_output_secrets_and_exit_status(capsys):
    assert main(["probe", "--help"]) == 0
    text = capsys.readouterr().out
    for phrase in (
        "report.md",
        "report.json",
        "metadata-<version>.xml",
        "basic auth",
        "Exit status",
        "--sets",
    ):
        assert phrase in text


def test_the_readme_section_names_every_option(capsys):
    assert main(["probe", "--help"]) == 0
    usage = capsys.readouterr().out.split("\n\n", 1)[0]  # "usage: tk-api probe [-h] [--base-url URL] …"
    options = re.findall(r"\[(--[a-z-]+)", usage)
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Checking the live API: tk-api probe\n", 1)[1].split("\n## ", 1)[0]
    assert len(options) >= 5 and all(f"`{o}" in section or f" {o} " in section for o in options), options
    assert "report.md" in section and "report.json" in section and "metadata-<version>.xml" in section


def test_a_200_that_is_not_csdl_is_not_an_answer(tmp_path):
    """A captive portal or a proxy's login page answers 200 with HTML: the version does not answer."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Portal(BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<html><body>Please log in to the guest network</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Portal)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        out = tmp_path / "out"
        code = main(["probe", "--base-url", f"http://127.0.0.1:{httpd.server_address[1]}", "--out", str(out)])
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert code == 2
    report = json.loads((out / "report.json").read_text())
    for v in report["versions"]:
        assert v["metadata"]["status"] == 200 and not v["answered"]
        assert v["reason"].startswith("HTTP 200 but not a CSDL document (text/html)")


def test_one_version_missing_is_reported_with_the_servers_message(tmp_path):
    with ReplayServer(Dataset.generate(20, seed=4)) as server:
        del server.profiles["v5"]  # a server that serves v4/2.0 only: /OData/v5 is an unknown resource
        report = run_probe(ProbeSettings(base_url=server.url, sets=("Zaak",), retries=0))
    assert report.answering == ["v4/2.0"]
    v5 = next(v for v in report.versions if v.version == "v5")
    assert v5.metadata.status == 404 and v5.reason.startswith("HTTP 404: No HTTP resource was found")
    assert v5.requests == [] and v5.diff is None
    md = write_report(report, tmp_path).read_text()
    assert f"- **v5** (`{v5.service_root}`): does not answer: HTTP 404" in md
    assert not (tmp_path / "metadata-v5.xml").exists() and (tmp_path / "metadata-v4-2.0.xml").exists()


def test_the_default_base_url_is_the_loaders_and_the_profile_setting_is_ignored(tmp_path, monkeypatch):
    with ReplayServer(Dataset.generate(20, seed=5)) as server:
        monkeypatch.setenv("TK_API_BASE_URL", server.url)
        monkeypatch.setenv("TK_API_PROFILE", "auto")  # every version is probed, whatever the loaders use
        assert main(["probe", "--out", str(tmp_path / "out"), "--sets", "Zaak"]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["base_url"] == server.url and set(report["answering"]) == set(PROFILES)
