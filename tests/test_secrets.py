"""A password in a storage or tracking URI never reaches a child process's command line (any local user reads
/proc/<pid>/cmdline) and is never printed: sweep workers and the UI's MLflow server get the URIs through their
environment. Real PostgreSQL, real worker processes, real `mlflow server`."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from servers import free_port, port_open, postgres_missing, postgres_server, stop_group
from sweeps.config.secrets import redact

MISSING = postgres_missing()
PASSWORD = "pw-Zq81-secret"
EXPERIMENT = """\
name: secrets
encoder: tiny-xlmr
data: {data_dir: fixtures, max_length: 32, max_train_examples: 64, max_eval_examples: 16, eval_splits: [test]}
budget: {trials: 2}
phases: {intermediate: [mnli], baseline: false, targets: [pawsx]}
train: {intermediate: {lr: 1.0e-3, epochs: 1, batch_size: 16}, target: {lr: 1.0e-3, epochs: 1, batch_size: 16}}
"""


def test_redact_hides_every_password():
    text = f"postgresql://me:{PASSWORD}@db:5432/x and mysql+pymysql://u:{PASSWORD}@h/y, http://plain/host"
    assert redact(text) == "postgresql://me:***@db:5432/x and mysql+pymysql://u:***@h/y, http://plain/host"


def command_lines(root: int) -> dict[int, str]:
    """The command lines of `root` and all its descendants."""
    found, todo = {}, [root]
    while todo:
        pid = todo.pop()
        try:
            found[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue
        todo += [int(child) for child in children]
    return found


def wait_for(predicate, timeout: float):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    return predicate()


@pytest.fixture
def postgres_with_password():
    """A PostgreSQL cluster with a role that has a password (the cluster trusts 127.0.0.1, so any password
    connects; the point is the URI that carries it)."""
    if MISSING:
        pytest.skip(MISSING)
    import psycopg2

    with postgres_server() as server:
        connection = psycopg2.connect(server.url())
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE ROLE tester LOGIN PASSWORD '{PASSWORD}'")
            for name in ("optuna", "mlflow"):
                cursor.execute(f'CREATE DATABASE "{name}" OWNER tester')
        connection.close()
        yield lambda database: f"postgresql://tester:{PASSWORD}@127.0.0.1:{server.port}/{database}"


@pytest.mark.timeout(600)
def test_sweep_workers_and_ui_server_get_no_password_on_their_command_line(tmp_path, postgres_with_password):
    storage, uri = postgres_with_password("optuna"), postgres_with_password("mlflow")
    path = tmp_path / "secrets.yaml"
    path.write_text(EXPERIMENT)
    sweep = subprocess.Popen([sys.executable, "-m", "sweeps.cli", "sweep", str(path), "--workers", "2",
                              "--storage", storage, "--tracking-uri", uri, "--artifact-root",
                              str(tmp_path / "artifacts")], cwd=tmp_path, start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def workers_started():
            found = {pid: line for pid, line in command_lines(sweep.pid).items() if "--worker-index" in line}
            return found if len(found) == 2 else None

        workers = wait_for(workers_started, timeout=180)
        assert workers, command_lines(sweep.pid)
        assert all(PASSWORD not in line for line in workers.values()), workers
        assert all("--storage" not in line and "--tracking-uri" not in line for line in workers.values())
        output, _ = sweep.communicate(timeout=480)
    finally:
        stop_group(sweep)
    assert sweep.returncode == 0, output[-3000:]
    assert PASSWORD not in output

    port = free_port()
    ui = subprocess.Popen([sys.executable, "-m", "sweeps.cli", "ui", "--port", str(port), "--tracking-uri", uri],
                          cwd=tmp_path, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    try:
        assert wait_for(lambda: port_open(port), timeout=120), "the UI did not start"
        servers = {pid: line for pid, line in command_lines(ui.pid).items() if pid != ui.pid}
        assert any("mlflow" in line for line in servers.values()), servers
        assert all(PASSWORD not in line for line in servers.values()), servers
    finally:
        stop_group(ui)
    assert PASSWORD not in ui.stdout.read()
