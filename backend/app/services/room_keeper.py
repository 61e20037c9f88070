"""The room keeper: every LiveKit room with a user in it has an agent, whatever happened to the last one.

livekit-server dispatches an agent once, when a room starts, and does nothing more (1.11: a worker that dies
only ends its jobs; the ``JRP_ON_FAILURE`` restart policy is acted on by nothing). So a room whose worker was
killed keeps a silent agent participant for ~20 s, then none; and a room that started while no worker had
room (models still loading, every slot busy) never gets one. The keeper, in the API process, mends both
with LiveKit's own parts:

- the server's webhooks (``POST /v1/livekit/webhook``, verified by ``livekit-api``'s ``WebhookReceiver``) say
  when a room starts, someone joins or leaves, and a room ends (its history is then deleted);
- the room store's lease (``app.services.room_store``) says whether the agent in a room is alive: a killed
  worker stops renewing it within ``LEASE_TTL_S``;
- a sweep every ``SWEEP_S`` over the server's rooms catches what no webhook announced;
- the cure is an explicit dispatch (``AgentDispatchService.create_dispatch``) into the same room, carrying the
  metadata of the room's first dispatch (the user's instructions and voice). The new agent starts from the
  room's history; the dead one's participant is removed, so that the user's page sees it leave at once.

Several API replicas may run keepers: claims in the store make one of them act per room and per webhook.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from livekit import api
from livekit.protocol.models import ParticipantInfo

from app.config.settings import Settings
from app.services.livekit_tokens import agent_identity
from app.services.room_store import RoomStore

log = logging.getLogger("app.services.room_keeper")

SWEEP_S = 0.5
# A room with a user and no agent is given one only after this long: its first dispatch may still be joining.
FIRST_AGENT_GRACE_S = 1.0
# The least time between two dispatches into one room. A dispatch can fail with no trace in the room: across
# nodes, the node that claims the job may offer it to a worker that filled up since its last load report
# (every 2.5 s), and no other is tried. A second agent that a retry brings leaves at once: the lease is taken.
DISPATCH_RETRY_S = 1.0
# While no worker takes the room (all busy, none running), the retries slow down to one per this many seconds.
DISPATCH_RETRY_MAX_S = 10.0
# A room's holder (its agent's job is alive) that is not in the room this long is replaced: its LiveKit node went
# away and the room was made anew elsewhere (the holder takes the lease before it joins, and joins in well under it).
HOLDER_ABSENT_S = 4.0
# How often a held room is checked for its holder (besides when a webhook says someone came or went).
PRESENCE_CHECK_S = 5.0
# A room that ended is forgotten this long after, unless it starts again meanwhile: a LiveKit node going away ends
# its rooms, and their users rejoin them by name (on another node) with the conversation.
FORGET_AFTER_S = 10.0
# A webhook older than this, or seen before, is refused (a replay).
WEBHOOK_MAX_AGE_S = 300
_PEOPLE = (ParticipantInfo.Kind.STANDARD, ParticipantInfo.Kind.SIP)


class WebhookRefused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


class RoomKeeper:
    def __init__(self, settings: Settings, store: RoomStore) -> None:
        self.settings, self.store = settings, store
        self.agent_prefix = agent_identity(settings.livekit_agent_name, "")
        secret = settings.livekit_api_secret.get_secret_value()
        signer = settings.livekit_webhook_api_key or settings.livekit_api_key
        self._receiver = api.WebhookReceiver(api.TokenVerifier(signer, secret))
        self._lkapi: api.LiveKitAPI | None = None
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._soon: set[str] = set()  # rooms a webhook asked about
        self._bare_since: dict[str, float] = {}  # rooms with a user and no agent, since when
        self._attempts: dict[str, int] = {}  # dispatches into a room since it last had its agent
        self._presence_checked: dict[str, float] = {}  # when each held room was last checked for its holder
        self._finished: dict[str, float] = {}  # rooms that ended (monotonic time): forgotten after FORGET_AFTER_S
        self._absent_since: dict[str, float] = {}  # held rooms whose holder is not in them, since when
        self._last_error: str | None = None

    # -- life

    async def start(self) -> None:
        self._lkapi = api.LiveKitAPI(self.settings.livekit_url, self.settings.livekit_api_key,
                                     self.settings.livekit_api_secret.get_secret_value())
        self._task = asyncio.create_task(self._watch(), name="room-keeper")
        log.info("room keeper watching LiveKit rooms at %s (conversations kept in the %s)",
                 self.settings.livekit_url, self.store.where)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._lkapi is not None:
            await self._lkapi.aclose()
        await asyncio.to_thread(self.store.close)

    # -- webhooks

    async def receive(self, body: str, authorization: str | None) -> api.WebhookEvent:
        """Verifies a webhook (signature, body hash, age, not seen before) and acts on it."""
        if not authorization:
            raise WebhookRefused(401, "unauthorized", "webhooks must be signed (Authorization header)")
        token = authorization.removeprefix("Bearer ").strip()
        try:
            event = self._receiver.receive(body, token)
        except Exception as exc:  # noqa: BLE001 - a bad JWT, a body that isn't what was signed, bad JSON
            raise WebhookRefused(401, "unauthorized", f"webhook signature refused: {type(exc).__name__}") from None
        if event.created_at and event.created_at < time.time() - WEBHOOK_MAX_AGE_S:
            raise WebhookRefused(409, "webhook_replayed", "webhook too old: refused as a replay")
        if not await asyncio.to_thread(self.store.claim, f"webhook:{event.id}", 2 * WEBHOOK_MAX_AGE_S):
            raise WebhookRefused(409, "webhook_replayed", "webhook already received: refused as a replay")
        await self.on_event(event)
        return event

    async def on_event(self, event: api.WebhookEvent) -> None:
        room = event.room.name
        if not room:
            return
        if event.event == "room_finished":
            self._soon.discard(room)
            self._bare_since.pop(room, None)
            self._finished[room] = time.monotonic()
            log.info("room %s ended: its conversation is forgotten in %.0f s unless it starts again", room,
                     FORGET_AFTER_S)
            return
        if event.event == "room_started" and self._finished.pop(room, None) is not None:
            log.info("room %s started again: its conversation goes on", room)
        if event.event in ("room_started", "participant_joined", "participant_left",
                           "participant_connection_aborted"):
            self._soon.add(room)
            self._wake.set()

    # -- the watch

    async def _watch(self) -> None:
        while True:
            try:
                await self.sweep()
                self._last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - LiveKit or the store away: say so once, keep watching
                message = f"{type(exc).__name__}: {exc}"
                if message != self._last_error:
                    log.warning("room keeper: %s (it keeps trying)", message)
                self._last_error = message
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), SWEEP_S)

    async def sweep(self) -> None:
        # Every room: a room's num_participants is refreshed by the server only now and then.
        rooms = {room.name for room in (await self._lkapi.room.list_rooms(api.ListRoomsRequest())).rooms}
        asked, self._soon = self._soon, set()
        rooms |= asked
        for gone in set(self._bare_since) - rooms:
            del self._bare_since[gone]
        for gone in set(self._attempts) - rooms:
            del self._attempts[gone]
        for table in (self._presence_checked, self._absent_since):
            for gone in set(table) - rooms:
                del table[gone]
        await self._forget_ended(rooms)
        for room in rooms:
            await self.check(room, asked=room in asked)

    async def _forget_ended(self, rooms: set[str]) -> None:
        now = time.monotonic()
        for room, ended in list(self._finished.items()):
            if now - ended >= FORGET_AFTER_S:
                await asyncio.to_thread(self.store.forget, room)
                del self._finished[room]
                log.info("room %s ended: its conversation is forgotten", room)

    async def check(self, room: str, *, asked: bool = False) -> str:
        """Looks at one room and mends it if it must; returns what it found (for logs and tests). ``asked``: a
        webhook said something happened in it."""
        lease = await asyncio.to_thread(self.store.lease, room)
        now = time.monotonic()
        if lease == "held":
            self._bare_since.pop(room, None)
            self._attempts.pop(room, None)
            due = asked or room in self._absent_since or \
                now - self._presence_checked.get(room, 0.0) >= PRESENCE_CHECK_S
            if not due:
                return "held"
            self._presence_checked[room] = now
            return await self._check_holder(room, now)
        participants = await self._participants(room)
        if participants is None:
            return "gone"
        people = [p for p in participants if p.kind in _PEOPLE]
        agents = [p for p in participants if p.identity.startswith(self.agent_prefix)]
        if not people:
            return "empty"
        if lease == "lapsed":
            # Its worker died: it stopped renewing the lease without letting go. Its participant would linger
            # (the server waits ~20 s for it to come back); removed now, the user's page shows it reconnecting.
            for agent in agents:
                with contextlib.suppress(api.TwirpError):
                    await self._lkapi.room.remove_participant(
                        api.RoomParticipantIdentity(room=room, identity=agent.identity))
            await self._dispatch(room, "its agent's worker stopped answering")
            return "lapsed"
        if agents:
            return "agent"  # one that keeps no lease here (a worker with another store, or one just joining)
        since = self._bare_since.setdefault(room, now)
        if now - since < FIRST_AGENT_GRACE_S:
            self._soon.add(room)
            return "waiting"
        await self._dispatch(room, "a user is there with no agent")
        return "bare"

    async def _participants(self, room: str) -> list[ParticipantInfo] | None:
        """Who is in ``room``; None if the room is gone."""
        try:
            return list((await self._lkapi.room.list_participants(api.ListParticipantsRequest(room=room))).participants)
        except api.TwirpError as exc:
            if exc.code == "not_found":
                return None
            raise

    async def _check_holder(self, room: str, now: float) -> str:
        """A held room: is its holder in it? One that stays away (its node went away, and the room was made anew on
        another) loses the lease, and the next check sends another agent."""
        holder = await asyncio.to_thread(self.store.holder, room)
        participants = await self._participants(room)
        if participants is None:
            return "gone"
        if holder is None or holder in {p.identity for p in participants} or \
                not any(p.kind in _PEOPLE for p in participants):
            self._absent_since.pop(room, None)
            return "held"
        since = self._absent_since.setdefault(room, now)
        if now - since < HOLDER_ABSENT_S:
            return "held"
        del self._absent_since[room]
        await asyncio.to_thread(self.store.evict, room, holder)
        log.info("room %s: its agent %s is not in it: another is sent", room, holder)
        self._soon.add(room)
        self._wake.set()
        return "absent"

    async def _dispatch(self, room: str, why: str) -> None:
        attempts = self._attempts.get(room, 0)
        wait_s = min(DISPATCH_RETRY_S * 2 ** max(0, attempts - 2), DISPATCH_RETRY_MAX_S)  # 1, 1, 2, 4, 8, 10 s
        if not await asyncio.to_thread(self.store.claim, f"dispatch:{room}", wait_s):
            return  # dispatched a moment ago (here or by another replica): its agent is on its way
        name = self.settings.livekit_agent_name
        metadata = ""
        with contextlib.suppress(api.TwirpError):
            earlier = await self._lkapi.agent_dispatch.list_dispatch(room)
            metadata = next((d.metadata for d in earlier if d.agent_name == name and d.metadata), "")
        await self._lkapi.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(agent_name=name, room=room, metadata=metadata))
        self._attempts[room] = attempts + 1
        if attempts == 0:
            log.info("room %s: %s, so an agent was dispatched into it", room, why)
        elif attempts in (3, 10) or attempts % 50 == 0:
            log.warning("room %s: still no agent after %d dispatches (no worker with room?)", room, attempts + 1)
