"""The fake Discord gateway: one websocket per client connection, sessions that resume and replay."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import zlib
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.discord.models import Json
from tests.fakes.discord.state import DiscordState

# Gateway intents that need a switch in the developer portal.
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_PRESENCES = 1 << 8
INTENT_MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = INTENT_GUILD_MEMBERS | INTENT_GUILD_PRESENCES | INTENT_MESSAGE_CONTENT


@dataclass(eq=False)
class Session:
    id: str
    intents: int
    shard: list[int] | None
    seq: int = 0
    events: list[tuple[int, Json]] = field(default_factory=list)
    connection: GatewayConnection | None = None
    resumable: bool = True


@dataclass(eq=False)
class GatewayConnection:
    """One websocket the client opened, with what it asked for and how it ended."""

    path: str
    query: dict[str, str]
    compression: str | None
    # "identify", "resume" or "invalid" once the client has said which.
    kind: str | None = None
    ops: list[int] = field(default_factory=list)
    closed: bool = False
    # The fake's code when it closed the socket, otherwise the client's.
    close_code: int | None = None
    _ws: web.WebSocketResponse | None = None
    _zlib: Any = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _session: Session | None = None

    async def send(self, frame: Json) -> None:
        assert self._ws is not None
        text = json.dumps(frame, separators=(",", ":"))
        # Compression and write stay together so the shared zlib stream matches frame order.
        async with self._lock:
            if self._zlib is not None:
                chunk = self._zlib.compress(text.encode()) + self._zlib.flush(zlib.Z_SYNC_FLUSH)
                await self._ws.send_bytes(chunk)
            else:
                await self._ws.send_str(text)


class Gateway:
    """The websocket gateway: HELLO, IDENTIFY and READY, heartbeats, RESUME with replay, and dispatches."""

    def __init__(self, state: DiscordState) -> None:
        self.state = state
        self.connections: list[GatewayConnection] = []
        self.identify_payloads: list[Json] = []
        self._sessions: dict[str, Session] = {}
        self._session: Session | None = None

    async def close_all(self) -> None:
        for conn in self.connections:
            if conn._ws is not None and not conn.closed:
                conn.closed = True
                await conn._ws.close(code=1001)

    async def wait_until_ready(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until a client has identified and been sent READY and its guilds."""
        await self.state.wait_for(lambda: self.live_session() is not None, timeout)

    def live_session(self) -> Session | None:
        session = self._session
        if session is None or session.connection is None or session.connection.closed:
            return None
        return session

    def connection(self) -> GatewayConnection:
        session = self.live_session()
        if session is None or session.connection is None:
            raise RuntimeError("no client is connected to the fake gateway")
        return session.connection

    async def dispatch(self, event: str, data: Json) -> None:
        """Send a gateway DISPATCH to the bot; kept for replay if the socket is down (as Discord does)."""
        session = self._session
        if session is None:
            await self.wait_until_ready()
            session = self._session
        assert session is not None
        await self._send_dispatch(session, event, data)

    async def _send_dispatch(self, session: Session, event: str, data: Json) -> None:
        session.seq += 1
        frame = {"op": 0, "t": event, "s": session.seq, "d": data}
        session.events.append((session.seq, frame))
        conn = session.connection
        if conn is not None and not conn.closed:
            # A socket can die between the check and the write; the event then waits for RESUME.
            with contextlib.suppress(ConnectionError, RuntimeError):
                await conn.send(frame)

    async def reconnect(self) -> None:
        """Send op 7 RECONNECT: the client must drop the socket and RESUME."""
        await self.connection().send({"op": 7, "d": None, "s": None, "t": None})

    async def disconnect(self, code: int = 4000) -> None:
        """Drop the socket with a resumable close code; events sent meanwhile are replayed."""
        conn = self.connection()
        conn.closed, conn.close_code = True, code
        assert conn._ws is not None
        await conn._ws.close(code=code)

    async def invalidate_session(self, *, resumable: bool = False) -> None:
        """Send op 9; with ``resumable=False`` the session is gone and the client must IDENTIFY anew."""
        conn = self.connection()
        if conn._session is not None and not resumable:
            conn._session.resumable = False
        await conn.send({"op": 9, "d": resumable, "s": None, "t": None})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        compression = request.query.get("compress")
        encoding = request.query.get("encoding", "json")
        if compression not in (None, "zlib-stream") or encoding != "json" or request.query.get("v") != "10":
            self.state.server_errors.append(f"gateway options not supported: {dict(request.query)}")
            raise web.HTTPBadRequest(text="unsupported gateway options")
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        conn = GatewayConnection(request.path, dict(request.query), compression, _ws=ws)
        if compression == "zlib-stream":
            conn._zlib = zlib.compressobj()
        self.connections.append(conn)
        await self.state.notify()
        await conn.send(
            {"op": 10, "d": {"heartbeat_interval": int(self.state.heartbeat_interval * 1000)}, "s": None, "t": None}
        )
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    self.state.server_errors.append(f"gateway frame type not supported: {msg.type}")
                    break
                if not await self._on_frame(conn, json.loads(msg.data)):
                    break
        finally:
            conn.closed = True
            if conn.close_code is None:
                conn.close_code = ws.close_code
            if conn._session is not None and conn._session.connection is conn:
                conn._session.connection = None
            await self.state.notify()
        return ws

    async def _close(self, conn: GatewayConnection, code: int, reason: str) -> bool:
        assert conn._ws is not None
        conn.closed, conn.close_code = True, code
        await conn._ws.close(code=code, message=reason.encode())
        return False

    async def _on_frame(self, conn: GatewayConnection, frame: Json) -> bool:
        op, data = frame.get("op"), frame.get("d")
        conn.ops.append(int(op) if isinstance(op, int) else -1)
        if op == 1:
            await conn.send({"op": 11, "d": None, "s": None, "t": None})
        elif op == 2:
            return await self._identify(conn, data or {})
        elif op == 6:
            await self._resume(conn, data or {})
        elif op in (3, 4, 8):
            # Presence, voice and member requests: accepted, nothing in this fake depends on them.
            if conn._session is None:
                return await self._close(conn, 4003, "Not authenticated.")
        else:
            return await self._close(conn, 4001, "Unknown opcode.")
        await self.state.notify()
        return True

    async def _identify(self, conn: GatewayConnection, data: Json) -> bool:
        if conn._session is not None:
            return await self._close(conn, 4005, "Already authenticated.")
        self.identify_payloads.append(data)
        if data.get("token") != self.state.token:
            return await self._close(conn, 4004, "Authentication failed.")
        intents = int(data.get("intents") or 0)
        if intents & PRIVILEGED_INTENTS & ~self.state.privileged_intents:
            return await self._close(conn, 4014, "Disallowed intent(s).")
        session = Session(secrets.token_hex(16), intents, data.get("shard"))
        self._sessions[session.id] = session
        self._session = session
        conn.kind, conn._session, session.connection = "identify", session, conn
        ready: Json = {
            "v": 10,
            "user": {**self.state.bot_user.payload(), "verified": True, "mfa_enabled": False, "flags": 0},
            "guilds": [{"id": str(g.id), "unavailable": True} for g in self.state.guilds.values()],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": self.state.resume_gateway_url,
            "application": {"id": str(self.state.application_id), "flags": self.state.application_flags},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "user_settings": {},
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": [],
        }
        if session.shard is not None:
            ready["shard"] = session.shard
        await self._send_dispatch(session, "READY", ready)
        all_members = bool(intents & INTENT_GUILD_MEMBERS)
        for guild in self.state.guilds.values():
            await self._send_dispatch(
                session,
                "GUILD_CREATE",
                guild.gateway_payload(bot_id=self.state.bot_user.id, all_members=all_members),
            )
        await self.state.notify()
        return True

    async def _resume(self, conn: GatewayConnection, data: Json) -> None:
        session = self._sessions.get(str(data.get("session_id")))
        if session is None or not session.resumable or data.get("token") != self.state.token:
            conn.kind = "invalid"
            await conn.send({"op": 9, "d": False, "s": None, "t": None})
            return
        conn.kind, conn._session, session.connection = "resume", session, conn
        self._session = session
        seen = int(data.get("seq") or 0)
        for seq, frame in list(session.events):
            if seq > seen:
                await conn.send(frame)
        await self._send_dispatch(session, "RESUMED", {})
