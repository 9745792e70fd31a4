"""The dashboard's pages and API: a Flask app (WSGI), served behind the token gate by `ui.serve`.

    app = create_app(settings, csrf="...")

Pages are server-rendered (Jinja, templates/) and ask the API (JSON) for what moves: the runs list,
a run's log and curves, a sweep's points. State-changing requests (cancel, resume) are POST with the
page's CSRF token in the X-CSRF-Token header; the token gate's cookie is SameSite=Strict too.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Any

from flask import Flask, abort, jsonify, render_template, request

from deltajobs.errors import DeltaJobsError, NotFoundError
from deltajobs.spec.settings import Settings
from deltajobs.ui import data

HERE = Path(__file__).parent


def create_app(settings: Settings, csrf: str) -> Flask:
    app = Flask("deltajobs.ui", template_folder=str(HERE / "templates"), static_folder=str(HERE / "static"))
    app.config["JSON_SORT_KEYS"] = False

    @app.context_processor
    def common() -> dict[str, Any]:
        return {"csrf": csrf, "states": data.STATES}

    @app.errorhandler(NotFoundError)
    def not_found(err: NotFoundError) -> Any:
        if request.path.startswith("/api/"):
            return jsonify(error=str(err)), 404
        return render_template("error.html", message=str(err)), 404

    @app.errorhandler(DeltaJobsError)
    def failed(err: DeltaJobsError) -> Any:
        if request.path.startswith("/api/"):
            return jsonify(error=str(err)), 500
        return render_template("error.html", message=str(err)), 500

    def checked_post() -> None:
        sent = request.headers.get("X-CSRF-Token", "")
        if not hmac.compare_digest(sent.encode(), csrf.encode()):
            abort(403)

    def arg_int(name: str, default: int) -> int:
        try:
            return int(request.args.get(name, default))
        except ValueError:
            return default

    # -- pages -------------------------------------------------------------------------------------

    @app.get("/")
    def runs_page() -> Any:
        return render_template("runs.html")

    @app.get("/run/<job_id>")
    def run_page(job_id: str) -> Any:
        return render_template("run.html", run=data.run_detail(settings, job_id))

    @app.get("/sweeps")
    def sweeps_page() -> Any:
        return render_template("sweeps.html", sweeps=data.sweeps(settings))

    @app.get("/sweep/<sweep_id>")
    def sweep_page(sweep_id: str) -> Any:
        return render_template("sweep.html", sweep=data.sweep_detail(settings, sweep_id))

    @app.get("/spend")
    def spend_page() -> Any:
        return render_template("spend.html", spend=data.spend(settings, arg_int("days", 30)))

    @app.get("/compare")
    def compare_page() -> Any:
        ids = [i for i in request.args.get("ids", "").split(",") if i.strip()]
        return render_template("compare.html", compare=data.compare(settings, ids))

    # -- API ---------------------------------------------------------------------------------------

    @app.get("/api/runs")
    def api_runs() -> Any:
        since_days = request.args.get("days")
        since = None
        if since_days and since_days.isdigit():
            import time

            since = time.time() - int(since_days) * 86400
        return jsonify(
            data.runs(
                settings,
                state=request.args.get("state") or None,
                account=request.args.get("account") or None,
                text=request.args.get("q") or None,
                since=since,
                page=arg_int("page", 1),
                per_page=min(500, max(1, arg_int("per_page", data.PER_PAGE))),
            )
        )

    @app.get("/api/run/<job_id>")
    def api_run(job_id: str) -> Any:
        return jsonify(data.row_dict(data.find_row(settings, job_id)))

    @app.get("/api/run/<job_id>/log")
    def api_log(job_id: str) -> Any:
        row = data.find_row(settings, job_id)
        offset, rank = arg_int("offset", 0), arg_int("rank", 0)
        return jsonify(data.log_chunk(row, offset, err=request.args.get("err") == "1", task=rank))

    @app.get("/api/run/<job_id>/curves")
    def api_curves(job_id: str) -> Any:
        return jsonify(data.curves(data.find_row(settings, job_id)))

    @app.post("/api/run/<job_id>/cancel")
    def api_cancel(job_id: str) -> Any:
        checked_post()
        return jsonify(data.cancel(settings, job_id))

    @app.post("/api/run/<job_id>/resume")
    def api_resume(job_id: str) -> Any:
        checked_post()
        return jsonify(data.resume(settings, job_id))

    @app.get("/api/sweep/<sweep_id>")
    def api_sweep(sweep_id: str) -> Any:
        return jsonify(data.sweep_detail(settings, sweep_id))

    @app.get("/api/spend")
    def api_spend() -> Any:
        return jsonify(data.spend(settings, arg_int("days", 30)))

    return app
