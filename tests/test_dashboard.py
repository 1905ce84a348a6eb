"""`xstilts dashboard` starts optuna-dashboard on the sweeps' Optuna storage (--storage, else $XSTILTS_STORAGE),
bound to 127.0.0.1: its studies API lists the storage's studies with their trials; stopping the command by its pid
(SIGTERM, SIGINT) stops the server too, and nothing is left listening."""

import json
import os
import signal
import urllib.request

import optuna
import pytest

from servers import descendants, free_port, lines_of, stop_by_pid, stop_group, wait_for_address, xstilts_server

pytestmark = pytest.mark.timeout(300)


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


@pytest.mark.parametrize("given, how", [("flag", signal.SIGTERM), ("environment", signal.SIGINT)],
                         ids=["flag-sigterm", "environment-sigint"])
def test_dashboard_serves_the_studies_and_stops_by_pid(tmp_path, how, given):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="demo/intermediate/mnli", storage=storage, direction="maximize")
    study.optimize(lambda trial: trial.suggest_float("lr", 1e-5, 1e-3, log=True), n_trials=3)
    port = free_port()
    flag = ["--storage", storage] if given == "flag" else []
    environment = {**os.environ, **({"XSTILTS_STORAGE": storage} if given == "environment" else {})}
    dashboard = xstilts_server("dashboard", "--port", str(port), *flag, cwd=tmp_path, env=environment)
    try:
        address, _ = wait_for_address(lines_of(dashboard.stdout), "optuna-dashboard at ", timeout=120)
        assert address == f"http://127.0.0.1:{port}"
        (listed,) = get(f"{address}/api/studies")["study_summaries"]
        assert listed["study_name"] == "demo/intermediate/mnli"
        detail = get(f"{address}/api/studies/{listed['study_id']}")
        assert [t["number"] for t in detail["trials"]] == [0, 1, 2]
        children = descendants(dashboard.pid)
        assert children  # the server
        for child in children:  # the storage URL is never on a child's command line
            assert storage not in open(f"/proc/{child}/cmdline").read()
        stop_by_pid(dashboard, how, children, port)
    finally:
        stop_group(dashboard)
