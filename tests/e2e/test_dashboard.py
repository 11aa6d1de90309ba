"""`tuner dashboard` as a user starts it: a real server on a free port, read over HTTP."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.fake_study import make_study

NAME = "sentiment-tiny"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def study_names_over_http(port: int, timeout: float = 30.0) -> list[str]:
    """The dashboard's study list (GET /api/studies), polled until the server answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as r:
                return [str(s["study_name"]) for s in json.loads(r.read())["study_summaries"]]
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_dashboard_serves_the_study_list(tmp_path: Path) -> None:
    studies = tmp_path / "studies"
    make_study(studies, NAME, trials=3)
    port = free_port()
    tuner = str(Path(sys.executable).with_name("tuner"))
    process = subprocess.Popen(
        [tuner, "dashboard", "--studies-dir", str(studies), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        names = study_names_over_http(port)
    finally:
        process.terminate()
        out, err = process.communicate(timeout=30)
    assert names == [NAME]
    assert process.returncode == 0, err
    assert f"open http://127.0.0.1:{port}/" in out
    assert "dashboard stopped" in out and "Traceback" not in err
