"""Issue 12, deliverable 5: the local stack (``make run`` / ``make stop``) as real processes.

* the offline TK API stops on SIGTERM, always, within a few seconds: while it builds its data, idle, and
  under load with requests hanging inside it; ``make stop``'s ``stop_pidfile`` returns only once it is gone;
* the Airflow api-server that ``make run`` starts listens on loopback only, unless ``TK_AIRFLOW_HOST``
  asks otherwise (the demo login admin/admin is in the README).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from scripts import local_stack
from scripts.local_stack import Airflow, stop_pidfile
from tests.conftest import ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_replay(port: int, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "include.tk_replay", "--port", str(port), *extra]
    return subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            if requests.get(f"http://127.0.0.1:{port}/OData/v4/2.0/$metadata", timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError(f"replay server on {port} not up in {timeout} s")


def _hammer(port: int, stop: threading.Event) -> None:
    with requests.Session() as s:
        while not stop.is_set():
            try:
                s.get(f"http://127.0.0.1:{port}/OData/v4/2.0/Zaak", timeout=1)
            except requests.RequestException:
                pass


def _sigterm_exits_within(proc: subprocess.Popen, seconds: float) -> float:
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"the replay server ignored SIGTERM for {seconds} s")
    return time.monotonic() - t0


@pytest.mark.parametrize("delay", [0.0, 0.3, 1.5])
def test_sigterm_stops_the_replay_server_under_load(delay):
    """Requests hang inside the server (hang faults) and eight clients keep it busy; SIGTERM at a few
    moments (right after the start, while it may still build its data, under load) ends it in seconds."""
    port = _free_port()
    proc = _start_replay(port, "--generate", "300", "--hang-rate", "0.3", "--hang-seconds", "60")
    stop = threading.Event()
    clients = [threading.Thread(target=_hammer, args=(port, stop), daemon=True) for _ in range(8)]
    try:
        if delay:
            _wait_listening(port, proc)
            for t in clients:
                t.start()
            time.sleep(delay)
        took = _sigterm_exits_within(proc, 8.0)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert took < 8.0
    assert proc.returncode in (0, -signal.SIGTERM, 128 + signal.SIGTERM, -signal.SIGALRM)


def test_make_stop_waits_for_the_replay_server(tmp_path, monkeypatch):
    port = _free_port()
    monkeypatch.setattr(local_stack, "STATE", tmp_path)
    proc = local_stack.start_replay(port)  # as make run starts it: pid file in the state dir
    stop = threading.Event()
    clients = [threading.Thread(target=_hammer, args=(port, stop), daemon=True) for _ in range(4)]
    for t in clients:
        t.start()
    try:
        time.sleep(0.5)
        assert stop_pidfile(tmp_path / "tk_replay.pid") is True
        assert proc.poll() is not None  # gone when stop_pidfile returns, not some time later
        assert not (tmp_path / "tk_replay.pid").exists()
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/OData/v4/2.0/$metadata", timeout=2)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert stop_pidfile(tmp_path / "tk_replay.pid") is False  # nothing left: a second stop is a no-op


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket LISTENing on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for name in ("tcp", "tcp6"):
        path = Path("/proc/net") / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            addr_hex, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A = LISTEN
                continue
            if name == "tcp":
                found.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(addr_hex)[::-1]))
            else:
                raw = bytes.fromhex(addr_hex)
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found


def test_the_airflow_api_server_of_make_run_listens_on_loopback_only(tmp_path):
    assert Airflow(tmp_path, host="0.0.0.0").env()["AIRFLOW__API__HOST"] == "0.0.0.0"
    airflow = Airflow(tmp_path / "airflow", port=_free_port())  # the defaults of make run
    airflow.home.mkdir(parents=True)
    airflow.airflow("db", "migrate")
    log = open(tmp_path / "api-server.log", "wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "airflow"), "api-server"],  # host and port from the env
        env=airflow.env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "api-server.log").read_text()[-2000:]
            try:
                if requests.get(f"{airflow.url}/api/v2/monitor/health", timeout=2).ok:
                    break
            except requests.RequestException:
                time.sleep(0.5)
        else:
            pytest.fail("api-server not up in 120 s")
        assert _listening_addresses(airflow.port) == {"127.0.0.1"}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
