"""The dashboard without SLURM or a browser: Flask's test client on an empty registry (clear errors,
not 500s), the log reader's edge cases (a long log, a progress bar without newlines), and metrics
JSON cannot carry (NaN)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("flask")

from deltajobs.registry.schema import JobRow  # noqa: E402
from deltajobs.spec.settings import load_settings  # noqa: E402
from deltajobs.ui import data  # noqa: E402
from deltajobs.ui.web import create_app  # noqa: E402


@pytest.fixture
def client():  # type: ignore[no-untyped-def]
    data.clear_cache()
    return create_app(load_settings(), csrf="the-csrf").test_client()


def test_unknown_ids_are_404_in_words_not_500(client) -> None:  # type: ignore[no-untyped-def]
    for path in ("/run/999", "/api/run/999", "/api/run/999/log", "/api/run/999/curves", "/sweep/sw-nope",
                 "/api/sweep/sw-nope", "/compare?ids=1,2"):  # fmt: skip
        reply = client.get(path)
        assert reply.status_code == 404, path
        text = reply.get_data(as_text=True)
        assert "Traceback" not in text and ("999" in text or "sw-nope" in text or "1" in text)
    assert client.get("/compare?ids=1").status_code == 404  # one id: says it needs two
    runs = client.get("/api/runs?page=abc").get_json()
    assert runs["rows"] == [] and runs["page"] == 1 and runs["total"] == 0


def test_posts_need_the_pages_csrf_token(client) -> None:  # type: ignore[no-untyped-def]
    assert client.post("/api/run/1/cancel").status_code == 403
    assert client.post("/api/run/1/cancel", headers={"X-CSRF-Token": "wrong"}).status_code == 403
    assert client.post("/api/run/1/cancel", headers={"X-CSRF-Token": "the-csrf"}).status_code == 404  # past it
    page = client.get("/").get_data(as_text=True)
    assert '<meta name="csrf-token" content="the-csrf">' in page and "deltajobs.runsPage()" in page


def row(tmp_path: Path, state: str = "RUNNING") -> JobRow:
    return JobRow("7", "job", "minidelta", "local", str(tmp_path), "o", "e", 0.0, state)


def test_a_long_log_comes_in_chunks_and_a_progress_bar_is_not_stuck(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    log = tmp_path / "log.out"
    monkeypatch.setattr(data, "log_file", lambda r, err=False, task=0: log)
    log.write_bytes(b"x" * (data.LOG_CHUNK + 10) + b"\nend\n")
    first = data.log_chunk(row(tmp_path, "COMPLETED"), 0)
    assert first["more"] and first["offset"] == data.LOG_CHUNK
    rest = data.log_chunk(row(tmp_path, "COMPLETED"), first["offset"])
    assert not rest["more"] and rest["text"].endswith("end\n")
    log.write_bytes(b"\r".join(b"step %d" % i for i in range(60000)))  # tqdm: \r only, over a chunk
    bar = data.log_chunk(row(tmp_path), 0)
    assert bar["offset"] == data.LOG_CHUNK and "step 1\nstep 2\n" in bar["text"]
    log.write_bytes(b"half a li")
    assert data.log_chunk(row(tmp_path), 0) == {"text": "", "offset": 0, "final": False, "more": False}


def test_nan_and_infinity_are_gaps_in_the_curves(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text(
        "\n".join(json.dumps({"step": i, "loss": v}) for i, v in enumerate([1.0, math.nan, math.inf, 0.5], 1)).replace(
            "NaN", "NaN"
        )
        + "\n"
    )
    (tmp_path / "spec.yaml").write_text("run: {script: t.py}\n")
    found = data.curves(row(tmp_path))
    assert found["series"]["loss"] == [1.0, None, None, 0.5] and found["x"] == [1, 2, 3, 4]
    json.dumps(found, allow_nan=False)  # valid JSON for the page
