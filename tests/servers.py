"""Real servers for the tests: a throw-away PostgreSQL 15 cluster (and free ports, and process-group handling for
the `xstilts` subprocesses the tests start and stop).

PostgreSQL refuses to run as root: as root, every PostgreSQL command runs as the `postgres` user through `runuser`,
on a data folder it owns under /tmp (pytest's tmp_path is not readable by other users). Nothing is installed here;
`.ci/run` installs the Debian package `postgresql` on CI machines, and the tests skip where it is missing.
"""

from __future__ import annotations

import os
import pwd
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

PG_BIN = Path(os.environ.get("XSTILTS_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "xstilts"  # the cluster's superuser (trust authentication on 127.0.0.1 only)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def lines_of(stream) -> queue.Queue:
    """The stream's lines, read on a thread (readline alone would block past any deadline); None at its end."""
    lines: queue.Queue = queue.Queue()

    def pump():
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def wait_for_address(lines: queue.Queue, banner: str, timeout: float) -> tuple[str, list[str]]:
    """(the address a command prints after `banner`, the lines it printed until then)."""
    seen, deadline = [], time.time() + timeout
    while time.time() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        if line is None:
            break
        seen.append(line)
        if f"{banner}http://" in line:
            return line.split(banner, 1)[1].split()[0], seen
    raise AssertionError(f"no line with {banner!r}:\n" + "".join(seen[-50:]))


def xstilts_server(*args: str, cwd, env=None) -> subprocess.Popen:
    """`xstilts ARGS` (ui, dashboard) in a session of its own, its output one stream (read it with lines_of)."""
    return subprocess.Popen([sys.executable, "-m", "sweeps.cli", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def stop_by_pid(process: subprocess.Popen, how: int, children: list[int], port: int) -> None:
    """Send `how` to the command alone, by its pid: it ends, and so do the children it started and its port."""
    process.send_signal(how)
    process.wait(timeout=60)
    deadline = time.time() + 30
    while any(alive(pid) for pid in children) and time.time() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in children if alive(pid)]
    assert not port_open(port)


def stop_group(process: subprocess.Popen, grace: float = 20.0) -> None:
    """Terminate a subprocess started with start_new_session=True and everything it started (its process group);
    kill the group if it is still there after `grace` seconds."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # stragglers of the group (the server's own workers)
    except ProcessLookupError:
        pass
    process.wait()


def postgres_missing() -> str | None:
    """Why no PostgreSQL cluster can be started here, or None."""
    for program in ("initdb", "pg_ctl", "postgres"):
        if not (PG_BIN / program).exists():
            return (f"PostgreSQL 15 is not installed ({PG_BIN / program} is missing; Debian: apt-get install "
                    f"postgresql, as .ci/run does)")
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            return "running as root without runuser: PostgreSQL refuses to run as root"
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no `postgres` user to run PostgreSQL as"
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 is not installed"
    return None


class Postgres:
    """One PostgreSQL cluster on 127.0.0.1:<port> with its data under a fresh folder in /tmp."""

    def __init__(self):
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="xstilts-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.as_root = os.geteuid() == 0
        if self.as_root:
            account = pwd.getpwnam("postgres")
            os.chown(self.root, account.pw_uid, account.pw_gid)

    def _command(self, program: str, *args: str) -> list[str]:
        command = [str(PG_BIN / program), *args]
        return ["runuser", "-u", "postgres", "--", *command] if self.as_root else command

    def _run(self, program: str, *args: str, timeout: float = 120) -> None:
        done = subprocess.run(self._command(program, *args), capture_output=True, text=True, timeout=timeout)
        if done.returncode:
            log = self.log.read_text()[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{program} {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n"
                               f"{done.stderr}\n{log}")

    def start(self) -> Postgres:
        self._run("initdb", "-D", str(self.data), "-U", PG_USER, "-A", "trust", "-E", "UTF8", "--no-locale",
                  "--no-sync")
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
                   f"-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "120", "start")
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg2

        connection = psycopg2.connect(self.url())
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()
        return self.url(name)

    def pid(self) -> int | None:
        pid_file = self.data / "postmaster.pid"
        try:
            return int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """pg_ctl stop (fast shutdown); if the server is still up after it (its postmaster.pid left), its
        postmaster by that process id."""
        if self.pid() is not None:
            try:
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop", timeout=90)
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        pid = self.pid()  # None once the server has shut down: it removes the file last
        if pid is not None:
            try:
                os.kill(pid, signal.SIGQUIT)  # immediate shutdown
                deadline = time.time() + 30
                while time.time() < deadline:
                    os.kill(pid, 0)
                    time.sleep(0.2)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def postgres_server():
    server = Postgres()
    try:
        yield server.start()
    finally:
        server.stop()


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 (its own process group: its workers go with it), against a sqlite store and
    an artifact folder that outlive it, so that it can be killed and started again on the same port."""

    def __init__(self, folder: Path, port: int | None = None, backend: str | None = None):
        self.folder, self.port = Path(folder), port or free_port()
        self.backend = backend or f"sqlite:///{self.folder / 'server.db'}"
        self.process: subprocess.Popen | None = None
        self.address = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> "MlflowServer":
        import sys
        import urllib.request

        command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend,
                   "--artifacts-destination", str(self.folder / "artifacts"),
                   "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        environment = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.log = (self.folder / "server.log").open("a")
        self.process = subprocess.Popen(command, cwd=self.folder, env=environment, stdout=self.log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.process.poll() is None, (self.folder / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{self.address}/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"mlflow server did not start in {timeout} s")

    def kill(self) -> None:
        """SIGKILL the server's whole process group (a crash: nothing is flushed or answered)."""
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()
            self.process = None
            deadline = time.time() + 30
            while port_open(self.port) and time.time() < deadline:
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process, grace=10)
            self.process = None


@contextmanager
def mlflow_server(folder: Path):
    server = MlflowServer(folder)
    try:
        yield server.start()
    finally:
        server.stop()
        server.kill()


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (children, their children ...), read from /proc."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Running (a zombie, ended but not yet reaped, counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
