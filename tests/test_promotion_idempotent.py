"""Promotion is idempotent: promoting the same run twice reuses its model version, and a promotion SIGKILLed after
registering the version but before moving the alias, run again, leaves one version per run with the alias on the
best. (The runs have no checkpoint: the versions are registered with --checkpoint-only; tests/test_promotion_scope.py
promotes real fits as pyfunc models.)"""

import os
import signal
import subprocess
import sys

import mlflow
import pytest

from sweeps.config import PromoteConfig
from sweeps.tracking.registry import promote
from sweeps.tracking.store import tracked_run

pytestmark = pytest.mark.timeout(300)
MODEL = "xstilts-promotions-panx"
CHECKPOINT_ONLY = PromoteConfig(checkpoint_only=True)

KILLED_BEFORE_THE_ALIAS = """
import os, signal, sys
import mlflow
from sweeps.cli import main

def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)  # the promotion dies here: version registered, alias not moved

mlflow.MlflowClient.set_registered_model_alias = killed
sys.exit(main(["promote", "panx", "--checkpoint-only", "--tracking-uri", sys.argv[1]]))
"""


def fitted(uri: str, score: float) -> str:
    tags = {"xstilts.task": "panx", "xstilts.command": "fit"}
    with tracked_run(uri, "promotions", f"fit-{score}", tags) as run:
        run.log_metrics({"selection/score": score})
    return run.run_id


def versions(client):
    """Every version of the model, with its aliases (a search leaves them out)."""
    found = sorted(client.search_model_versions(f"name = '{MODEL}'"), key=lambda v: int(v.version))
    return [client.get_model_version(MODEL, v.version) for v in found]


def test_promotion_killed_before_the_alias_is_completed_by_its_rerun(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    fitted(uri, 60.0)
    best = fitted(uri, 70.0)

    killed = subprocess.run([sys.executable, "-c", KILLED_BEFORE_THE_ALIAS, uri], cwd=tmp_path, capture_output=True,
                            text=True, timeout=240)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    (registered,) = versions(client)
    assert registered.run_id == best and not registered.aliases  # the state the kill left

    rerun = subprocess.run([sys.executable, "-m", "sweeps.cli", "promote", "panx", "--checkpoint-only", "--tracking-uri",
                            uri],
                           cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"promoted models:/{MODEL}@champion = version 1 (run {best}" in rerun.stdout
    (only,) = versions(client)
    assert only.run_id == best and only.aliases == ["champion"] and only.status == "READY"

    again = promote("panx", uri, CHECKPOINT_ONLY)  # nothing better: kept, nothing registered
    assert (again.moved, again.version) == (False, "1") and len(versions(client)) == 1

    better = fitted(uri, 80.0)
    assert promote("panx", uri, CHECKPOINT_ONLY).version == "2"
    client.set_registered_model_alias(MODEL, "champion", "1")  # say a user moved it back by hand
    assert promote("panx", uri, CHECKPOINT_ONLY).version == "2"  # the best run's version, reused
    assert [(v.run_id, v.aliases) for v in versions(client)] == [(best, []), (better, ["champion"])]
