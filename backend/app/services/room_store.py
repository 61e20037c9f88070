"""What a LiveKit room's conversation keeps outside the worker that runs it, so that it outlives that worker.

- **History**: each completed turn (who said what), appended by the agent as the turn ends; an agent that
  joins the room later (a worker died, the user rejoined) starts from it. Bounded (the last
  ``ROOM_HISTORY_MAX_ITEMS`` messages, each cut to ``MAX_TEXT_CHARS``) and deleted when the room ends
  (the ``room_finished`` webhook; the keeper waits ``FORGET_AFTER_S`` for a rejoin), or after
  ``ROOM_HISTORY_TTL_S`` without a turn if that never comes.
- **Lease**: the agent that holds the room renews it every ``LEASE_RENEW_S``. A worker killed with SIGKILL
  stops renewing; its participant lingers in the room for ~20 s (the server waits for it to reconnect), but
  its lease is gone within ``LEASE_TTL_S``, which is how the room keeper knows to send another agent.
- **Claims**: one-shot marks with a lifetime, so that several API replicas (or one, twice) don't dispatch
  two agents into one room or act on one webhook twice.

Redis (``REDIS_URL``) where the deployment has one: every API replica and worker shares it. Otherwise an
SQLite file (``ROOM_STORE_PATH``), which the API and the workers of one machine share. The methods are
blocking (both are fast and local); async code calls them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from app.config.settings import Settings

log = logging.getLogger("app.services.room_store")

LEASE_TTL_S = 2.5
LEASE_RENEW_S = 0.5
PREFIX = "gemmavoice:room:"


class RoomStoreError(RuntimeError):
    """The store can't be used; the message says which one and why."""


@dataclass(frozen=True)
class Turn:
    role: str  # "user" or "assistant"
    text: str


class RoomStore(ABC):
    def __init__(self, *, max_items: int, max_chars: int, ttl_s: int) -> None:
        self.max_items, self.max_chars, self.ttl_s = max_items, max_chars, ttl_s

    @property
    @abstractmethod
    def where(self) -> str:
        """Where the store is, for logs and errors (no password)."""

    # -- history

    @abstractmethod
    def append(self, room: str, turn: Turn) -> None: ...

    @abstractmethod
    def history(self, room: str) -> list[Turn]: ...

    @abstractmethod
    def forget(self, room: str) -> None:
        """The room ended: its history, lease and marks go."""

    # -- leases

    @abstractmethod
    def acquire(self, room: str, holder: str, ttl_s: float = LEASE_TTL_S) -> bool:
        """``holder`` (an agent's identity) takes ``room`` if no one else holds it now; False if someone does."""

    @abstractmethod
    def renew(self, room: str, holder: str, ttl_s: float = LEASE_TTL_S) -> bool:
        """``holder`` holds ``room`` for ``ttl_s`` more seconds; False if its lease ended meanwhile (evicted, or run
        out): then it no longer holds the room, and its agent should leave."""

    @abstractmethod
    def holder(self, room: str) -> str | None:
        """Who holds ``room`` now."""

    @abstractmethod
    def evict(self, room: str, holder: str) -> None:
        """Ends ``holder``'s lease as if it had stopped renewing (``lapsed``): its agent is alive but not in the
        room (its node went away), so another takes the room, and this one leaves at its next renewal."""

    @abstractmethod
    def lease(self, room: str) -> str:
        """``held`` (an agent renews it), ``lapsed`` (an agent held it and stopped renewing without letting go:
        its worker died), or ``none``."""

    @abstractmethod
    def release(self, room: str, holder: str) -> None:
        """``holder`` lets go of ``room`` (if it still holds it): it left on purpose."""

    # -- claims

    @abstractmethod
    def claim(self, name: str, ttl_s: float) -> bool:
        """True for the first caller of ``name`` within ``ttl_s`` seconds, False for the others."""

    def _bounded(self, turn: Turn) -> Turn:
        return Turn(turn.role, turn.text[:self.max_chars])

    def close(self) -> None:
        pass


class RedisRoomStore(RoomStore):
    def __init__(self, url: str, **limits: int) -> None:
        super().__init__(**limits)
        import redis

        parsed = urlparse(url)
        self._where = f"Redis at {parsed.hostname}:{parsed.port or 6379}"
        self._redis = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2, decode_responses=True)
        self._errors = (redis.RedisError, OSError)

    @property
    def where(self) -> str:
        return self._where

    def _do(self, what, *args):
        try:
            return what(*args)
        except self._errors as exc:
            raise RoomStoreError(f"the room store ({self._where}) can't be reached: {type(exc).__name__}: "
                                 f"{exc}") from None

    def append(self, room: str, turn: Turn) -> None:
        turn = self._bounded(turn)
        key = f"{PREFIX}{room}:history"
        pipe = self._redis.pipeline()
        pipe.rpush(key, json.dumps({"role": turn.role, "text": turn.text}))
        pipe.ltrim(key, -self.max_items, -1)
        pipe.expire(key, self.ttl_s)
        self._do(pipe.execute)

    def history(self, room: str) -> list[Turn]:
        items = self._do(self._redis.lrange, f"{PREFIX}{room}:history", 0, -1)
        return [Turn(**json.loads(item)) for item in items]

    def forget(self, room: str) -> None:
        self._do(self._redis.delete, *(f"{PREFIX}{room}:{part}" for part in ("history", "holder", "held")))

    # The lease is two keys: "holder" lives LEASE_TTL_S past the last renewal, "held" as long as the history (it
    # tells a lapsed lease from none). Each step is one script: atomic however many replicas call it.
    _ACQUIRE = ("if redis.call('exists', KEYS[1]) == 1 and redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end "
                "redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) "
                "redis.call('set', KEYS[2], ARGV[1], 'EX', ARGV[3]) return 1")
    _RENEW = ("if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end "
              "redis.call('pexpire', KEYS[1], ARGV[2]) redis.call('expire', KEYS[2], ARGV[3]) return 1")
    _RELEASE = ("if redis.call('get', KEYS[2]) == ARGV[1] then redis.call('del', KEYS[1], KEYS[2]) end return 0")

    def _lease_keys(self, room: str) -> tuple[str, str]:
        return f"{PREFIX}{room}:holder", f"{PREFIX}{room}:held"

    def acquire(self, room: str, holder: str, ttl_s: float = LEASE_TTL_S) -> bool:
        return bool(self._do(lambda: self._redis.eval(self._ACQUIRE, 2, *self._lease_keys(room), holder,
                                                      int(ttl_s * 1000), self.ttl_s)))

    def renew(self, room: str, holder: str, ttl_s: float = LEASE_TTL_S) -> bool:
        return bool(self._do(lambda: self._redis.eval(self._RENEW, 2, *self._lease_keys(room), holder,
                                                      int(ttl_s * 1000), self.ttl_s)))

    def holder(self, room: str) -> str | None:
        return self._do(self._redis.get, self._lease_keys(room)[0])

    def evict(self, room: str, holder: str) -> None:
        self._do(lambda: self._redis.eval(
            "if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('del', KEYS[1]) end return 0",
            1, self._lease_keys(room)[0], holder))

    def lease(self, room: str) -> str:
        holder_key, held_key = self._lease_keys(room)
        holder, held = self._do(lambda: self._redis.mget(holder_key, held_key))
        return "held" if holder else "lapsed" if held else "none"

    def release(self, room: str, holder: str) -> None:
        self._do(lambda: self._redis.eval(self._RELEASE, 2, *self._lease_keys(room), holder))

    def claim(self, name: str, ttl_s: float) -> bool:
        return bool(self._do(lambda: self._redis.set(f"gemmavoice:claim:{name}", "1", nx=True,
                                                      px=max(1, int(ttl_s * 1000)))))

    def close(self) -> None:
        self._redis.close()


class SQLiteRoomStore(RoomStore):
    """One file shared by the processes of one machine (WAL: readers don't wait for the writer)."""

    def __init__(self, path: Path, **limits: int) -> None:
        super().__init__(**limits)
        self.path = Path(path).expanduser()
        self._local = threading.local()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._db() as db:
                db.executescript(
                    "CREATE TABLE IF NOT EXISTS history (room TEXT, seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                    "  role TEXT, text TEXT, at REAL);"
                    "CREATE INDEX IF NOT EXISTS history_room ON history (room, seq);"
                    "CREATE TABLE IF NOT EXISTS leases (room TEXT PRIMARY KEY, holder TEXT, until REAL);"
                    "CREATE TABLE IF NOT EXISTS claims (name TEXT PRIMARY KEY, until REAL);")
        except sqlite3.Error as exc:
            raise RoomStoreError(f"the room store ({self.where}) can't be opened: {exc}") from None

    @property
    def where(self) -> str:
        return f"SQLite file {self.path}"

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:  # one connection per thread: sqlite3 connections are not shared between threads
            db = sqlite3.connect(self.path, timeout=5, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    def _run(self, sql: str, *args) -> list[tuple]:
        try:
            return self._db().execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise RoomStoreError(f"the room store ({self.where}) failed: {exc}") from None

    def append(self, room: str, turn: Turn) -> None:
        turn, now = self._bounded(turn), time.time()
        self._run("INSERT INTO history (room, role, text, at) VALUES (?, ?, ?, ?)", room, turn.role, turn.text, now)
        self._run("DELETE FROM history WHERE room = ? AND seq NOT IN "
                  "(SELECT seq FROM history WHERE room = ? ORDER BY seq DESC LIMIT ?)", room, room, self.max_items)
        # Rooms whose end was never heard of: gone after the TTL, as in Redis.
        self._run("DELETE FROM history WHERE room IN (SELECT room FROM history GROUP BY room HAVING MAX(at) < ?)",
                  now - self.ttl_s)

    def history(self, room: str) -> list[Turn]:
        rows = self._run("SELECT role, text FROM history WHERE room = ? ORDER BY seq", room)
        return [Turn(role, text) for role, text in rows]

    def forget(self, room: str) -> None:
        self._run("DELETE FROM history WHERE room = ?", room)
        self._run("DELETE FROM leases WHERE room = ?", room)

    # A row per room an agent holds or held: "until" past means lapsed; the holder's release deletes it.

    def acquire(self, room: str, holder: str, ttl_s: float = LEASE_TTL_S) -> bool:
        now = time.time()
        self._run("INSERT INTO leases (room, holder, until) VALUES (?, ?, ?) ON CONFLICT (room) DO UPDATE SET "
                  "holder = excluded.holder, until = excluded.until WHERE leases.holder = excluded.holder "
                  "OR leases.until <= ?", room, holder, now + ttl_s, now)
        return self._run("SELECT holder FROM leases WHERE room = ?", room) == [(holder,)]

    def renew(self, room: str, holder: str, ttl_s: float = LEASE_TTL_S) -> bool:
        now = time.time()
        try:
            done = self._db().execute("UPDATE leases SET until = ? WHERE room = ? AND holder = ? AND until > ?",
                                      (now + ttl_s, room, holder, now))
        except sqlite3.Error as exc:
            raise RoomStoreError(f"the room store ({self.where}) failed: {exc}") from None
        return done.rowcount == 1

    def holder(self, room: str) -> str | None:
        rows = self._run("SELECT holder FROM leases WHERE room = ? AND until > ?", room, time.time())
        return rows[0][0] if rows else None

    def evict(self, room: str, holder: str) -> None:
        self._run("UPDATE leases SET until = 0 WHERE room = ? AND holder = ?", room, holder)

    def lease(self, room: str) -> str:
        rows = self._run("SELECT until FROM leases WHERE room = ?", room)
        return "none" if not rows else "held" if rows[0][0] > time.time() else "lapsed"

    def release(self, room: str, holder: str) -> None:
        self._run("DELETE FROM leases WHERE room = ? AND holder = ?", room, holder)

    def claim(self, name: str, ttl_s: float) -> bool:
        now = time.time()
        self._run("DELETE FROM claims WHERE until <= ?", now)
        try:
            self._db().execute("INSERT INTO claims (name, until) VALUES (?, ?)", (name, now + ttl_s))
        except sqlite3.IntegrityError:
            return False
        except sqlite3.Error as exc:
            raise RoomStoreError(f"the room store ({self.where}) failed: {exc}") from None
        return True

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


def open_room_store(settings: Settings) -> RoomStore:
    """Redis if ``REDIS_URL`` is set, else the SQLite file at ``ROOM_STORE_PATH``."""
    limits = {"max_items": settings.room_history_max_items, "max_chars": settings.max_text_chars,
              "ttl_s": settings.room_history_ttl_s}
    if settings.redis_url is not None:
        return RedisRoomStore(settings.redis_url.get_secret_value(), **limits)
    return SQLiteRoomStore(settings.room_store_path, **limits)
