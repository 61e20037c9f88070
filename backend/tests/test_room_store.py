"""The rooms' store (``app.services.room_store``) on both of its backends, real ones: Redis from Debian's package
(on loopback, with a password) and an SQLite file. Both must behave alike: the agents and the room keeper only
see the interface."""

from __future__ import annotations

import asyncio
import threading

import pytest
from helpers import free_port, until

from app.config.settings import Settings
from app.services.room_store import RedisRoomStore, RoomStoreError, SQLiteRoomStore, Turn, open_room_store
from bench.cluster import LocalRedis

LIMITS = {"max_items": 4, "max_chars": 12, "ttl_s": 60}


@pytest.fixture(scope="module")
def redis():
    server = LocalRedis.start()
    yield server
    server.stop()


@pytest.fixture(params=["redis", "sqlite"])
def store(request, tmp_path):
    if request.param == "redis":
        made = RedisRoomStore(request.getfixturevalue("redis").url, **LIMITS)
    else:
        made = SQLiteRoomStore(tmp_path / "rooms.sqlite", **LIMITS)
    yield made
    made.close()


def test_history_keeps_the_last_turns_in_order_each_cut_to_size_and_goes_with_the_room(store):
    for i in range(7):
        store.append("room-1", Turn("user" if i % 2 == 0 else "assistant", f"turn {i} " + "x" * 20))
    store.append("room-2", Turn("user", "another room"))
    kept = store.history("room-1")
    assert [t.text for t in kept] == ["turn 3 xxxxx", "turn 4 xxxxx", "turn 5 xxxxx", "turn 6 xxxxx"]
    assert [t.role for t in kept] == ["assistant", "user", "assistant", "user"]
    store.forget("room-1")
    assert store.history("room-1") == []
    assert store.history("room-2") == [Turn("user", "another room")]


async def test_a_lease_is_held_by_one_lapses_when_not_renewed_and_is_gone_when_released(store):
    assert store.lease("r") == "none"
    assert store.acquire("r", "agent-a", ttl_s=0.3)
    assert not store.acquire("r", "agent-b", ttl_s=0.3)  # a second dispatch: the room has its agent
    assert store.lease("r") == "held" and store.holder("r") == "agent-a"
    assert store.renew("r", "agent-a", ttl_s=0.3)
    # Its worker died: it stopped renewing without letting go.
    await until(lambda: store.lease("r") == "lapsed", 10, lambda: f"the lease to lapse; it is {store.lease('r')}")
    assert not store.renew("r", "agent-a")  # too late: it no longer holds the room
    assert store.acquire("r", "agent-b")
    store.release("r", "agent-a")  # not its lease any more: nothing happens
    assert store.holder("r") == "agent-b"
    store.release("r", "agent-b")
    assert store.lease("r") == "none"


def test_an_evicted_holder_cannot_renew_and_another_takes_the_room(store):
    assert store.acquire("r", "agent-a")
    store.evict("r", "agent-a")
    assert store.lease("r") == "lapsed"
    assert not store.renew("r", "agent-a")
    assert store.acquire("r", "agent-b") and store.holder("r") == "agent-b"


async def test_a_claim_goes_to_one_caller_of_many_at_once(store):
    winners = []

    def claim() -> None:
        if store.claim("dispatch:room-x", 5):
            winners.append(threading.current_thread().name)
    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1
    assert store.claim("dispatch:room-y", 0.2) and not store.claim("dispatch:room-y", 0.2)
    await until(lambda: store.claim("dispatch:room-y", 0.2), 10, "the claim to expire")


def test_a_redis_that_cannot_be_reached_is_named_in_the_error():
    store = RedisRoomStore(f"redis://:secret-password@127.0.0.1:{free_port()}/0", **LIMITS)
    with pytest.raises(RoomStoreError) as raised:
        store.history("room")
    message = str(raised.value)
    assert "Redis at 127.0.0.1" in message and "can't be reached" in message
    assert "secret-password" not in message


def test_a_wrong_redis_password_is_named_in_the_error(redis):
    store = RedisRoomStore(f"redis://:wrong@127.0.0.1:{redis.port}/0", **LIMITS)
    with pytest.raises(RoomStoreError, match="Redis at 127.0.0.1"):
        store.lease("room")


def test_the_settings_choose_redis_when_there_is_one(redis, tmp_path):
    with_redis = open_room_store(Settings(_env_file=None, redis_url=redis.url))
    without = open_room_store(Settings(_env_file=None, room_store_path=tmp_path / "r.sqlite"))
    assert isinstance(with_redis, RedisRoomStore) and isinstance(without, SQLiteRoomStore)
    assert redis.password not in repr(with_redis.where)


async def test_a_store_call_that_fails_hands_its_error_to_the_agent(tmp_path):
    """The agent's store thread (RoomMemory's): an error of the store reaches the awaiting caller, which would
    otherwise wait for ever (the exception was unbound before the loop read it)."""
    from app.agents.room_memory import _StoreThread

    thread = _StoreThread(SQLiteRoomStore(tmp_path / "rooms.sqlite", **LIMITS))

    def fail() -> None:
        raise RoomStoreError("the store is down")

    with pytest.raises(RoomStoreError, match="the store is down"):
        await asyncio.wait_for(thread.call(fail), 10)
    assert await asyncio.wait_for(thread.call(lambda: "served"), 10) == "served"  # and it goes on serving
