"""The agent's side of ``app.services.room_store`` in a LiveKit job: the conversation outlives its worker.

A job takes the room's lease before it joins (another agent holding the room means this job is a second
dispatch: it leaves at once), starts from the room's history, writes each turn as it completes, and renews
the lease until it ends. One thread per worker process does the store's work in order, so that a slow
store never holds up a conversation's event loop, and so that leases are renewed however busy the loops are.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable

from livekit.agents import AgentSession, llm
from livekit.agents.voice.events import ConversationItemAddedEvent

from app.config.settings import Settings
from app.services.room_store import LEASE_RENEW_S, RoomStore, RoomStoreError, Turn, open_room_store

log = logging.getLogger("app.agents.room_memory")


class _StoreThread:
    """The process's one store and the thread that uses it: queued writes in order, and every held room's
    lease renewed every ``LEASE_RENEW_S``."""

    def __init__(self, store: RoomStore) -> None:
        self.store = store
        self.held: dict[str, str] = {}  # room -> holder
        self.on_lost: dict[str, Callable[[], None]] = {}  # room -> what to do when another holder took it
        self._work: queue.Queue[Callable[[], None]] = queue.Queue()
        self._last_error: str | None = None
        threading.Thread(target=self._run, name="room-store", daemon=True).start()

    def submit(self, work: Callable[[], None]) -> None:
        self._work.put(work)

    async def call(self, work: Callable[[], object]) -> object:
        """Runs ``work`` on this thread, after what is queued, and returns its result."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def run() -> None:
            try:
                result = work()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                # (bound now: Python unbinds ``exc`` when this block ends, before the loop runs the callback)
                loop.call_soon_threadsafe(lambda exc=exc: done.done() or done.set_exception(exc))
            else:
                loop.call_soon_threadsafe(lambda: done.done() or done.set_result(result))
        self._work.put(run)
        return await done

    def _run(self) -> None:
        while True:
            try:
                work = self._work.get(timeout=LEASE_RENEW_S)
            except queue.Empty:
                work = None
            try:
                if work is not None:
                    work()
                for room, holder in list(self.held.items()):
                    if not self.store.renew(room, holder) and self.held.pop(room, None) is not None:
                        log.warning("room %s was given to another agent (this one was not in it): leaving", room)
                        self.on_lost.pop(room, lambda: None)()
                self._last_error = None
            except RoomStoreError as exc:
                if str(exc) != self._last_error:  # once per new trouble, not twice a second
                    log.warning("%s; this worker's conversations go on, but one it holds would not outlive it", exc)
                self._last_error = str(exc)
            except Exception:  # noqa: BLE001 - the thread must live on
                log.exception("room store work failed")


_thread: _StoreThread | None = None
_lock = threading.Lock()


def _store_thread(settings: Settings) -> _StoreThread:
    global _thread
    with _lock:
        if _thread is None:
            _thread = _StoreThread(open_room_store(settings))
            log.info("rooms' conversations are kept in the %s", _thread.store.where)
        return _thread


class RoomMemory:
    """One job's conversation in the store: ``await join()`` before the agent enters the room, ``attach(session)``
    once the session exists, ``await leave()`` when the job ends."""

    def __init__(self, settings: Settings, room: str, identity: str) -> None:
        self.room, self.identity = room, identity
        self._thread = _store_thread(settings)

    async def join(self) -> llm.ChatContext | None:
        """The room's history as a chat context to start from; None if another agent holds the room."""
        store = self._thread.store
        try:
            if not await self._thread.call(lambda: store.acquire(self.room, self.identity)):
                return None
            turns = await self._thread.call(lambda: store.history(self.room))
        except RoomStoreError as exc:
            log.warning("%s: this conversation starts without its history", exc)
            turns = []
        self._thread.held[self.room] = self.identity
        chat_ctx = llm.ChatContext()
        for turn in turns:
            chat_ctx.add_message(role=turn.role, content=turn.text)
        if turns:
            log.info("room %s: going on from %d earlier messages", self.room, len(turns))
        return chat_ctx

    def attach(self, session: AgentSession, on_lost: Callable[[], None]) -> None:
        """Turns go to the store as they complete; ``on_lost`` runs (on the session's loop) if the room keeper gave
        the room to another agent, because this one was not in it (its LiveKit node went away)."""
        session.on("conversation_item_added", self._item_added)
        loop = asyncio.get_running_loop()
        self._thread.on_lost[self.room] = lambda: loop.call_soon_threadsafe(on_lost)

    def _item_added(self, ev: ConversationItemAddedEvent) -> None:
        item = ev.item
        if getattr(item, "type", None) != "message" or item.role not in ("user", "assistant"):
            return
        text = (item.text_content or "").strip()
        if text:  # an interrupted reply: what the user heard of it
            turn, store, room = Turn(item.role, text), self._thread.store, self.room
            self._thread.submit(lambda: store.append(room, turn))

    async def leave(self) -> None:
        """The job ends on purpose (the user left, the session closed): the room is let go."""
        self._thread.on_lost.pop(self.room, None)
        if self._thread.held.pop(self.room, None) is None:
            return
        store, room, identity = self._thread.store, self.room, self.identity
        try:
            await self._thread.call(lambda: store.release(room, identity))
        except RoomStoreError as exc:
            log.warning("%s: room %s stays held until its lease runs out", exc, room)
