"""Claims in the sweep's database (sweeps/engine/claims.py), on real sqlite and PostgreSQL: of many processes taking
the same key at once exactly one gets it; a held claim is not taken while its holder beats, and is taken over once its
heartbeat is older than the grace period; a freed claim is taken at once, a done one never."""

import multiprocessing
import time

import pytest

from servers import postgres_missing, postgres_server
from sweeps.engine.claims import DONE, FREE, Claims
from sweeps.tracking.store import database_url


def _race(url: str, key: str, start: float, results) -> None:
    claims = Claims(url, grace_seconds=60, heartbeat_seconds=1)
    time.sleep(max(0.0, start - time.time()))
    results.put(claims.take(key))
    claims.close()


def race(url: str, processes: int = 8) -> list[bool]:
    Claims(url, 60, 1).close()  # the table exists before the race
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start = time.time() + 8  # every process is up and connected before the common start
    workers = [context.Process(target=_race, args=(url, "phase:abc", start, results)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    return [results.get(timeout=5) for _ in workers]


def lifecycle(url: str) -> None:
    first, second = Claims(url, grace_seconds=2, heartbeat_seconds=0.5), Claims(url, grace_seconds=2,
                                                                              heartbeat_seconds=0.5)
    assert first.take("slot:s#0") and not second.take("slot:s#0")
    first.set_payload("slot:s#0", {"lr": 0.001})
    first.start_heartbeat()
    time.sleep(3.5)  # longer than the grace period, but the holder beats
    assert not second.take("slot:s#0")
    assert second.states("slot:s#") == {"slot:s#0": "held"}
    first.close()  # its heartbeat stops, as a killed worker's does
    time.sleep(3.5)
    assert second.states("slot:s#") == {"slot:s#0": FREE}
    assert second.take("slot:s#0") and second.payload("slot:s#0") == {"lr": 0.001}
    first.end("slot:s#0", DONE)  # the old holder no longer owns it: nothing changes
    assert second.states("slot:s#") == {"slot:s#0": "held"}
    second.end("slot:s#0", FREE)
    assert first.take("slot:s#0")
    first.end("slot:s#0", DONE)
    assert not second.take("slot:s#0") and second.states("slot:") == {"slot:s#0": DONE}
    assert second.states("slot:s_") == {}  # a prefix is matched literally, `_` is no wildcard
    second.close()


def test_sqlite_one_winner_and_takeover(tmp_path):
    url = f"sqlite:///{tmp_path / 'claims.db'}"
    assert sorted(race(url)) == [False] * 7 + [True]
    lifecycle(f"sqlite:///{tmp_path / 'lifecycle.db'}")


@pytest.mark.skipif(postgres_missing() is not None, reason=postgres_missing() or "")
def test_postgres_one_winner_and_takeover():
    with postgres_server() as server:
        assert sorted(race(database_url(server.create_database("race")))) == [False] * 7 + [True]
        lifecycle(database_url(server.create_database("lifecycle")))
