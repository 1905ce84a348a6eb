"""Claims on shared work, atomic in the sweep's database (the Optuna storage: PostgreSQL across hosts, sqlite on one).

A claim is a row keyed by what it claims (a phase configuration, a study's trial slot). Taking it is one INSERT (or,
for a free or abandoned row, one conditional UPDATE): the database lets exactly one worker succeed, on any number of
hosts. The holder's heartbeat thread stamps its rows with the database's clock every few seconds; a row whose stamp is
older than the grace period belongs to a dead worker and may be taken over. A claim ends `done` (never taken again) or
`free` (taken again at once, e.g. after a failure or SIGTERM). The payload keeps what a retry must repeat: a slot's
parameters.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from datetime import timedelta

import sqlalchemy as sa

HELD, FREE, DONE = "held", "free", "done"
METADATA = sa.MetaData()
CLAIMS = sa.Table(
    "xstilts_claims", METADATA,
    sa.Column("key", sa.String(512), primary_key=True),
    sa.Column("owner", sa.String(256), nullable=False),
    sa.Column("state", sa.String(8), nullable=False),
    sa.Column("heartbeat", sa.DateTime, nullable=False),
    sa.Column("payload", sa.Text, nullable=True),
)


def created_once(create, attempts: int = 5):
    """`create()` (tables made on first use) where workers on several hosts may start at the same moment: the one that
    loses the race to create a table gets a database error, and finds the table there when it tries again."""
    for attempt in range(attempts):
        try:
            return create()
        except sa.exc.SQLAlchemyError:
            if attempt == attempts - 1:
                raise
            time.sleep(1 + attempt)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Claims:
    def __init__(self, url: str, grace_seconds: float, heartbeat_seconds: float, owner: str | None = None):
        connect_args = {"timeout": 60} if url.startswith("sqlite") else {}
        self.engine = sa.create_engine(url, connect_args=connect_args, pool_pre_ping=True)
        created_once(lambda: METADATA.create_all(self.engine, checkfirst=True))
        self.grace = timedelta(seconds=grace_seconds)
        self.interval = heartbeat_seconds
        self.owner = owner or worker_name()
        self._stop = threading.Event()
        self._beating: threading.Thread | None = None

    def _now(self, connection):
        return connection.execute(sa.select(sa.func.current_timestamp())).scalar()

    def take(self, key: str) -> bool:
        """True when this worker now holds `key`: it was new, free, or held by a worker whose heartbeat stopped."""
        with self.engine.begin() as connection:
            now = self._now(connection)
            found = connection.execute(sa.select(CLAIMS.c.key).where(CLAIMS.c.key == key)).first()
            if found is None:
                try:
                    with connection.begin_nested():
                        connection.execute(CLAIMS.insert().values(key=key, owner=self.owner, state=HELD,
                                                                  heartbeat=now))
                    return True
                except sa.exc.IntegrityError:  # another worker inserted it first
                    pass
            taken = connection.execute(
                CLAIMS.update()
                .where(CLAIMS.c.key == key)
                .where(sa.or_(CLAIMS.c.state == FREE,
                              sa.and_(CLAIMS.c.state == HELD, CLAIMS.c.heartbeat < now - self.grace)))
                .values(owner=self.owner, state=HELD, heartbeat=now))
            return taken.rowcount == 1

    def end(self, key: str, state: str) -> None:
        """Give up a held claim: DONE (nobody takes it again) or FREE (the next worker takes it at once)."""
        with self.engine.begin() as connection:
            connection.execute(CLAIMS.update().where(CLAIMS.c.key == key).where(CLAIMS.c.owner == self.owner)
                               .values(state=state, heartbeat=self._now(connection)))

    def payload(self, key: str) -> dict | None:
        with self.engine.connect() as connection:
            text = connection.execute(sa.select(CLAIMS.c.payload).where(CLAIMS.c.key == key)).scalar()
        return None if text is None else json.loads(text)

    def set_payload(self, key: str, payload: dict) -> None:
        with self.engine.begin() as connection:
            connection.execute(CLAIMS.update().where(CLAIMS.c.key == key).where(CLAIMS.c.owner == self.owner)
                               .values(payload=json.dumps(payload, sort_keys=True)))

    def states(self, prefix: str) -> dict[str, str]:
        """Every claim under `prefix` (a study's slots) and its state; a held claim gone stale reads FREE."""
        with self.engine.connect() as connection:
            stale = sa.and_(CLAIMS.c.state == HELD, CLAIMS.c.heartbeat < self._now(connection) - self.grace)
            rows = connection.execute(sa.select(CLAIMS.c.key, sa.case((stale, FREE), else_=CLAIMS.c.state))
                                      .where(CLAIMS.c.key.startswith(prefix, autoescape=True))).all()
        return dict(rows)

    def beat(self) -> None:
        with self.engine.begin() as connection:
            connection.execute(CLAIMS.update().where(CLAIMS.c.owner == self.owner).where(CLAIMS.c.state == HELD)
                               .values(heartbeat=self._now(connection)))

    def start_heartbeat(self) -> None:
        def loop():
            while not self._stop.wait(self.interval):
                try:
                    self.beat()
                except sa.exc.SQLAlchemyError:  # the database is briefly out of reach: the next beat tries again
                    pass

        self._beating = threading.Thread(target=loop, name="xstilts-claims-heartbeat", daemon=True)
        self._beating.start()

    def close(self) -> None:
        self._stop.set()
        if self._beating is not None:
            self._beating.join(timeout=self.interval + 5)
        self.engine.dispose()


def read_states(url: str | None, prefix: str) -> dict[str, str]:
    """The claims under `prefix` as stored (HELD, FREE, DONE), read without creating anything: {} where the database
    or its claims table does not exist yet."""
    if url is None or url.startswith("sqlite:///") and not os.path.exists(url.removeprefix("sqlite:///")):
        return {}
    engine = sa.create_engine(url)
    try:
        if not sa.inspect(engine).has_table(CLAIMS.name):
            return {}
        with engine.connect() as connection:
            return dict(connection.execute(sa.select(CLAIMS.c.key, CLAIMS.c.state)
                                           .where(CLAIMS.c.key.startswith(prefix, autoescape=True))).all())
    finally:
        engine.dispose()
