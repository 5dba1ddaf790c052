"""One worker's link to the cluster, over NATS core pub/sub.

Subjects (`prefix` defaults to "netcore"):

    <prefix>.w.<slot>   ops for rooms the worker at <slot> owns (it alone subscribes)
    <prefix>.r.<room>   the room's stream (the gateways with members there subscribe)
    <prefix>.ctl        hello / who / down: which incarnation holds which slot

Each worker is the owner of the rooms placement gives its slot (owner.py) and
the gateway of its own connections to every other room (gateway.py). The
worker's messages leave through one task, in the order they were made, so a
gateway's SUBSCRIBE to a room's stream reaches the broker before the JOIN that
makes the owner stream that room to it. Everything is batched: at most one
message per owner and one per room per event-loop iteration.

Incarnations. A worker's epoch is random per process start. A restarted
worker says hello with a new epoch: owners drop the members the old one had
(its connections died with it), and gateways re-enter their members into the
rooms the new one owns and resend what it never acknowledged. Until a
gateway knows an owner's epoch (a hello, or the answer to its who), it keeps
the ops for that owner, bounded, and sends none.

A new incarnation's rooms are rebuilt behind a barrier (owner.Owner).

Successors. A rolling restart (netcore_server.restart) replaces a worker
by a successor of the same incarnation: the successor connects first and
hears everything the slot hears (its ops, the control subject, every room
stream) without acting on it (`start(successor=True)`); the worker stops
handling messages (`freeze`), sends what it made, and hands its state over
(`export_state`); the successor takes it (`import_state`) and handles what
it heard since it connected. What the worker had handled already is a
repeat there: an op by its sequence number (the owner's numbering), a room
stream message by its own (`Gateway.on_stream`). For the rest of the
cluster nothing happened: the epoch is the same.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import struct
import time
from collections import Counter

from netcore_cluster import wire
from netcore_cluster.auth import NatsAuth, redact_url, take_inherited
from netcore_cluster.gateway import Gateway, RemoteRoom
from netcore_cluster.metrics import Histogram
from netcore_cluster.owner import Owner, RoomStream
from netcore_cluster.placement import ClusterMap, Placement

log = logging.getLogger("netcore_cluster")

# Forwarding delay buckets (seconds): op forwarded -> its acknowledgement seen.
DELAY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                 5.0, 10.0)
# Packets per room stream message: how well an iteration's broadcasts batch.
BATCH_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000)


class ClusterLink:
    def __init__(self, cmap: ClusterMap, slot: str, servers: list[str], *,
                 prefix: str = "netcore", max_pending_ops: int = 10000,
                 retransmit_after: float = 1.0, give_up_after: float = 30.0,
                 rebuild_timeout: float = 2.0, sub_pending_bytes: int = 64 << 20,
                 max_outbox_bytes: int = 64 << 20, epoch: int | None = None,
                 auth: "NatsAuth | None" = None, address: str | None = None):
        """auth: how to authenticate to the servers (auth.NatsAuth). A worker
        whose supervisor handed it credentials (auth.ENV_FD) uses those.
        address: "host:port", where the other machines reach this one's game
        port (said in every control message; `addresses` has the others')."""
        if slot not in cmap.slots:
            raise ValueError(f"slot {slot} is not in the cluster {cmap}")
        self.cmap = cmap
        self.placement = Placement(cmap)
        self.slot = slot
        self.servers = list(servers)
        self.auth = take_inherited() or auth or NatsAuth()
        self.prefix = prefix
        self.epoch = epoch or (int.from_bytes(os.urandom(8), "little") >> 1) or 1
        self.sub_pending_bytes = sub_pending_bytes
        self.rooms = None                       # the game's Rooms, bound by start()
        self.nc = None
        self.known: dict[str, int] = {slot: self.epoch}     # slot -> epoch that holds it
        self.address = address
        self.addresses: dict[str, tuple[str, int]] = {}     # slot -> its machine's game port
        self.owner = Owner(self, rebuild_timeout)
        self.gateway = Gateway(self, max_pending_ops, retransmit_after, give_up_after)
        self._subs: dict[int, object] = {}
        # Sending: what this iteration made, then one task sends it in order.
        self.up: dict[tuple, list] = {}                     # (owner slot, epoch) -> ops
        self._dirty: list[RoomStream] = []
        self._flush_scheduled = False
        self._outbox: list = []
        # What waits in the outbox for the sender task, bounded: past it a
        # message is dropped and counted (an op is resent, a room stream's
        # gap disconnects whom it hit), never kept without bound.
        self._outbox_bytes = 0
        self.max_outbox_bytes = max_outbox_bytes
        self._outbox_ready = asyncio.Event()
        self._quiet = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._closing = False
        self._sending = False
        # A rolling restart: messages heard but not handled yet (a successor
        # before it takes over: (handler, subject, data)), at most
        # max_outbox_bytes of them; and a worker that handed over handles none.
        self._heard: list | None = None
        self._heard_bytes = 0
        self._frozen = False
        self._wildcard = None
        # After a take-over, until the successor's subscription to every room
        # is drained: a room's messages come through it and through the
        # room's own, in two orders (Gateway.on_stream waits for the gaps).
        self.transitioning = False
        self.loop = None
        # Largest body of one message: the broker's max_payload (known once
        # connected), less room for a header.
        self.max_message = (1 << 20) - 256
        self.stats = Counter()
        self.forward_delay = Histogram(DELAY_BUCKETS)
        self.batch_packets = Histogram(BATCH_BUCKETS)

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self, rooms, successor: bool = False) -> "ClusterLink":
        """Connect and take the slot. successor: a rolling restart's new
        worker, which only listens until import_state() (module docstring)."""
        import nats                 # the cluster extra: netcore runs without it

        self.rooms = rooms
        self.loop = asyncio.get_running_loop()
        self.nc = await nats.connect(
            self.servers, name=f"netcore {self.slot}", no_echo=True,
            allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=0.25,
            connect_timeout=2, ping_interval=5, max_outstanding_pings=3,
            error_cb=self._on_error, disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected, pending_size=32 << 20,
            **self.auth.check().connect_options())
        self.max_message = self.nc.max_payload - 256
        if successor:
            self._heard = []
            self._wildcard = await self.nc.subscribe(
                f"{self.prefix}.r.*", cb=self._on_stream_msg,
                pending_bytes_limit=self.sub_pending_bytes)
        await self.nc.subscribe(f"{self.prefix}.w.{self.slot}", cb=self._on_up_msg,
                                pending_bytes_limit=self.sub_pending_bytes)
        await self.nc.subscribe(f"{self.prefix}.ctl", cb=self._on_ctl_msg)
        self._tasks = [self.loop.create_task(self._sender()),
                       self.loop.create_task(self._ticker())]
        if not successor:
            self.begin()
        await self.nc.flush()
        log.info("cluster: %s (epoch %x) on %s (%s), cluster %s", self.slot, self.epoch,
                 ",".join(redact_url(u) for u in self.servers), self.auth.describe(), self.cmap)
        return self

    def begin(self) -> None:
        """Say who we are: a new incarnation of the slot (a successor that
        got no state from its predecessor starts here too, as a restart)."""
        if self._heard is not None:
            self._heard = None                  # nothing of it is ours to handle
            self._heard_bytes = 0
            self._drop_wildcard()
        self.owner.start(self.loop)
        self._ctl("hello")
        self._ctl("who")

    # -- a rolling restart (netcore_server.restart) -----------------------------------

    def freeze(self) -> None:
        """Handle no message from now on: they are the successor's, which
        hears them too."""
        self._frozen = True

    async def send_all(self, timeout: float = 2.0) -> None:
        """Everything made so far is out, and the broker has it."""
        self._flush()
        self._outbox_ready.set()
        deadline = self.loop.time() + timeout
        while (self._outbox or self._sending) and self.loop.time() < deadline:
            await asyncio.sleep(0.001)
        try:
            await self.nc.flush(timeout=max(0.1, deadline - self.loop.time()))
        except Exception as exc:
            log.warning("cluster: could not flush to the broker before handing over: %r", exc)

    def export_state(self) -> dict:
        """What a successor needs to be this incarnation (after freeze and
        send_all: nothing is half made)."""
        return {"epoch": self.epoch, "known": dict(self.known),
                "owner": self.owner.export_state(), "gateway": self.gateway.export_state()}

    def import_state(self, state: dict, members: dict) -> None:
        """Become the predecessor's incarnation (`state`, its export_state),
        its members of other workers' rooms being `members` (player id ->
        Player, this worker's). Then call take_over() once the rooms are
        rebuilt (the owner's streams are attached as they are)."""
        self.epoch = state["epoch"]
        self.known = dict(state["known"])
        self.known[self.slot] = self.epoch
        self.owner.import_state(state["owner"])
        self.gateway.import_state(state["gateway"], members)

    def take_over(self) -> None:
        """Handle what was heard since connecting, in order (what the
        predecessor handled already is a repeat), then go on live."""
        heard, self._heard = self._heard or [], None
        self._heard_bytes = 0
        self.stats["heard_before_takeover"] += len(heard)
        for fn, subject, data in heard:
            self._handle_data(fn, subject, data)
        self.transitioning = self._wildcard is not None
        self._drop_wildcard()

    def _drop_wildcard(self) -> None:
        if self._wildcard is not None:
            # After the subscriptions of our rooms (the outbox is in order):
            # what both deliver meanwhile is a repeat, which the seq shows.
            self._outbox.append(("unsub_wildcard",))
            self._outbox_ready.set()

    async def quiesce(self, timeout: float = 5.0) -> bool:
        """Wait until every op this gateway forwarded has been acknowledged."""
        self._flush()
        if self.gateway.pending_ops():
            self._quiet.clear()
            try:
                await asyncio.wait_for(self._quiet.wait(), timeout)
            except asyncio.TimeoutError:
                log.warning("cluster: %d ops still unacknowledged at shutdown",
                            self.gateway.pending_ops())
                return False
        return True

    def maybe_quiet(self) -> None:
        if not self._quiet.is_set() and not self.gateway.pending_ops():
            self._quiet.set()

    async def drain_incoming(self, timeout: float = 2.0) -> None:
        """Handle every message the broker had routed to us before now: a
        round trip to the broker, then until our subscriptions' queues are empty."""
        self._flush()
        try:
            await asyncio.wait_for(self._drain_incoming(), timeout)
        except (asyncio.TimeoutError, Exception) as exc:   # a broker that is gone: no more to come
            log.warning("cluster: could not drain incoming messages: %r", exc)

    async def _drain_incoming(self):
        await self.nc.flush()
        while any(sub.pending_msgs for sub in list(self.nc._subs.values())):
            await asyncio.sleep(0)      # yield: the subscription tasks run the callbacks

    async def abandon(self) -> None:
        """A worker that handed over (after export_state): disconnect
        without sending anything more; what it would say is its successor's."""
        self._closing = self._frozen = True
        self.up, self._dirty, self._outbox = {}, [], []
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.nc is not None:
            try:
                await self.nc.close()
            except Exception:
                pass

    async def close(self) -> None:
        self._closing = True
        self._flush()
        self._outbox_ready.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.nc is not None:
            try:
                await self._send_outbox()
                await self.nc.flush(timeout=2)
            except Exception:       # the broker is gone: nothing more can leave
                pass
            await self.nc.close()

    # -- what the game's Rooms asks ----------------------------------------------------

    def owns(self, room_id: int) -> bool:
        return self.placement.owner(room_id) == self.slot

    def remote_room(self, room_id: int) -> RemoteRoom:
        return self.gateway.room(room_id)

    def attach(self, room) -> RoomStream:
        return self.owner.attach(room)

    def detach(self, room) -> None:
        self.owner.detach(room)

    def restored_member(self, stream: RoomStream, member) -> None:
        self.owner.restored_member(stream, member)

    # -- what the owner and gateway sides ask ------------------------------------------

    def stream_dirty(self, stream: RoomStream) -> None:
        self._dirty.append(stream)
        self._schedule()

    def queue_ops(self, owner: str, epoch: int, ops: list) -> None:
        """Encoded ops for the owner's incarnation `epoch`: in this iteration's message."""
        self.up.setdefault((owner, epoch), []).extend(ops)
        self._schedule()

    def subscribe(self, room_id: int) -> None:
        self._outbox.append(("sub", room_id))
        self._outbox_ready.set()

    def unsubscribe(self, room_id: int) -> None:
        self._outbox.append(("unsub", room_id))
        self._outbox_ready.set()

    # -- messages in -------------------------------------------------------------------

    def _on_up(self, data) -> None:
        to_epoch, g_epoch, g_slot, ops = wire.read_up(data)
        if g_slot not in self.cmap.slots or g_slot == self.slot:
            raise wire.WireError(f"ops from {g_slot}, which is no other slot of cluster "
                                 f"{self.cmap}")
        ops = self.owner.check_ops(ops)           # every op parses before any runs
        if to_epoch != self.epoch:
            self.stats["ops_stale"] += 1          # meant for an earlier incarnation of us
            return
        known = self.known.get(g_slot)
        if known is None:
            self.known[g_slot] = g_epoch          # its hello is still on its way
        elif known != g_epoch:
            self.stats["ops_stale"] += 1          # from a gateway that has restarted since
            return
        self.owner.on_ops((g_slot, g_epoch), ops)

    # -- control: who holds which slot -------------------------------------------------

    def _ctl(self, op: str, **extra) -> None:
        msg = {"op": op, "slot": self.slot, "epoch": self.epoch, "cluster": str(self.cmap),
               **extra}
        if self.address:
            msg["addr"] = self.address
        self._publish(f"{self.prefix}.ctl", json.dumps(msg).encode())
        self._outbox_ready.set()

    def _on_ctl(self, data) -> None:
        op, slot, epoch, cluster, address = read_ctl(data)
        if slot not in self.cmap.slots:
            if cluster is not None and cluster != str(self.cmap):
                raise wire.WireError(f"{slot} runs cluster {cluster}, this worker {self.cmap}: "
                                     f"rooms will be misrouted")
            raise wire.WireError(f"slot {slot} is not in cluster {self.cmap}")
        if address is not None and slot != self.slot:
            self.addresses[slot] = address
        if op == "who":
            if slot != self.slot:
                self._ctl("hello")
            op = "hello"                        # a who is also its sender's hello
        if op == "hello":
            if slot == self.slot:
                if epoch != self.epoch:
                    self.stats["slot_conflicts"] += 1
                    n = self.stats["slot_conflicts"]
                    if n & (n - 1) == 0:
                        log.error("cluster: another worker says it is %s: two nodes with "
                                  "the same --node-id? (%d times so far)", slot, n)
                return
            if cluster != str(self.cmap):
                log.error("cluster: %s runs cluster %s, this worker %s: rooms will be "
                          "misrouted", slot, cluster, self.cmap)
            if self.known.get(slot) != epoch:
                self._slot_changed(slot, epoch)
        elif op == "down" and slot != self.slot:
            if self.known.get(slot) == epoch:
                self.known.pop(slot, None)
                self.owner.drop_gateway(slot, None)
                self.owner.synced(slot)         # no SYNC will come from it
                log.info("cluster: %s is down", slot)

    def _slot_changed(self, slot: str, epoch: int) -> None:
        previous = self.known.get(slot)
        self.known[slot] = epoch
        self.owner.drop_gateway(slot, epoch)
        self.gateway.rebuild(slot, epoch)
        if previous is not None:
            self.stats["owner_restarts"] += 1
            log.info("cluster: %s is back (epoch %x)", slot, epoch)

    # -- the broker connection ---------------------------------------------------------

    async def _on_up_msg(self, msg):
        self._handle(self._on_up, msg)

    async def _on_stream_msg(self, msg):
        self._handle(self.gateway.on_stream, msg)

    async def _on_ctl_msg(self, msg):
        self._handle(self._on_ctl, msg)

    def _handle(self, fn, msg) -> None:
        if self._heard is not None:
            # A successor before it takes over: kept, bounded (past it, what
            # is lost shows as it would on the wire: a stream's gap, an op resent).
            n = len(msg.data)
            if self._heard_bytes + n > self.max_outbox_bytes:
                self.stats["heard_dropped"] += 1
                return
            self._heard_bytes += n
            self._heard.append((fn, msg.subject, msg.data))
            return
        if self._frozen:
            self.stats["left_to_successor"] += 1
            return
        self._handle_data(fn, msg.subject, msg.data)

    def _handle_data(self, fn, subject: str, data) -> None:
        """A message in: never an exception out of a subscription's callback.
        One that does not parse is dropped whole and counted; anything else
        that goes wrong is counted too, and the link carries on."""
        stats = self.stats
        stats["messages_in"] += 1
        stats["bytes_in"] += len(data)
        try:
            fn(data)
        except (wire.WireError, ValueError, KeyError, TypeError, IndexError,
                struct.error) as exc:
            stats["bad_messages"] += 1
            n = stats["bad_messages"]
            if n & (n - 1) == 0:            # the first, then at every power of two
                log.error("cluster: a message on %s does not parse (%d so far): %s",
                          subject, n, exc)
        except Exception:
            stats["internal_errors"] += 1
            log.exception("cluster: handling a message on %s failed", subject)

    async def _on_error(self, exc):
        from nats.errors import SlowConsumerError
        if isinstance(exc, SlowConsumerError):  # our pending limit dropped some of a subject
            self.stats["slow_consumer_drops"] += 1
            room = exc.subject.rsplit(".", 1)[-1]
            if room.isdigit():
                self.gateway.ping({int(room)})
        # While the broker is away every reconnect attempt fails: say it once,
        # then at every power of two.
        self.stats["broker_errors"] += 1
        n = self.stats["broker_errors"]
        if n & (n - 1) == 0 or self.nc is None or self.nc.is_connected:
            log.warning("cluster: broker error (%d so far): %r", n, exc)

    async def _on_disconnected(self):
        if self._closing:
            return
        self.stats["broker_disconnects"] += 1
        log.warning("cluster: lost the broker; reconnecting")

    async def _on_reconnected(self):
        self.stats["broker_reconnects"] += 1
        log.info("cluster: broker reconnected (%s)", self.nc.connected_url.netloc)
        # What was in flight may be lost: resend, see whether the room streams
        # skipped anything, and ask who is there now.
        self.gateway.resend_all()
        self.gateway.ping()
        self._ctl("hello")
        self._ctl("who")

    # -- sending ----------------------------------------------------------------------

    def _schedule(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Once per iteration: one message per owner and one per room. What
        was queued is taken first, so one entry that fails (counted and
        logged) never holds back the rest or what later iterations queue."""
        self._flush_scheduled = False
        up, self.up = self.up, {}
        dirty, self._dirty = self._dirty, []
        limit = self.max_message
        for (owner, epoch), ops in up.items():
            if not epoch or epoch != self.known.get(owner):
                continue
            try:
                head = wire.up_header(epoch, self.epoch, self.slot)
                subject = f"{self.prefix}.w.{owner}"
                body, size = [], 0
                for op in ops:
                    if body and size + len(op) > limit:
                        self._publish(subject, head + b"".join(body))
                        body, size = [], 0
                    body.append(op)
                    size += len(op)
                self._publish(subject, head + b"".join(body))
            except Exception:
                self.stats["internal_errors"] += 1
                log.exception("cluster: ops for %s could not be sent", owner)
        for stream in dirty:
            try:
                subject = f"{self.prefix}.r.{stream.room_id}"
                for message in stream.take_messages():
                    self._publish(subject, message)
            except Exception:
                self.stats["internal_errors"] += 1
                log.exception("cluster: room %d's stream could not be sent", stream.room_id)
        if self._outbox:
            self._outbox_ready.set()

    def _publish(self, subject: str, payload: bytes) -> None:
        """Into the outbox, unless that would take it past max_outbox_bytes
        (an empty one takes any message: one is at most max_payload)."""
        n = len(payload)
        if self._outbox_bytes and self._outbox_bytes + n > self.max_outbox_bytes:
            stats = self.stats
            stats["messages_dropped"] += 1
            stats["outbox_full"] += 1
            if stats["outbox_full"] & (stats["outbox_full"] - 1) == 0:
                log.warning("cluster: %d bytes wait for the broker; %d messages dropped so far",
                            self._outbox_bytes, stats["outbox_full"])
            return
        self._outbox_bytes += n
        self._outbox.append(("pub", subject, payload))

    async def _sender(self):
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            await self._send_outbox()

    async def _send_outbox(self):
        out, self._outbox = self._outbox, []
        self._outbox_bytes = 0
        nc = self.nc
        self._sending = True
        try:
            await self._send_items(nc, out)
        finally:
            self._sending = False

    async def _send_items(self, nc, out):
        for item in out:
            try:
                if item[0] == "pub":
                    await nc.publish(item[1], item[2])
                    self.stats["messages_out"] += 1
                    self.stats["bytes_out"] += len(item[2])
                elif item[0] == "sub":
                    if item[1] in self.gateway.rooms and item[1] not in self._subs:
                        self._subs[item[1]] = await nc.subscribe(
                            f"{self.prefix}.r.{item[1]}", cb=self._on_stream_msg,
                            pending_bytes_limit=self.sub_pending_bytes)
                elif item[0] == "unsub":
                    sub = self._subs.get(item[1])
                    if sub is not None and item[1] not in self.gateway.rooms:
                        del self._subs[item[1]]
                        await sub.unsubscribe()
                elif item[0] == "unsub_wildcard" and self._wildcard is not None:
                    sub, self._wildcard = self._wildcard, None
                    self._tasks.append(self.loop.create_task(self._drain_wildcard(sub)))
            except Exception as exc:        # broker away and its buffer full: counted
                self.stats["messages_dropped"] += 1
                log.warning("cluster: could not send to the broker: %r", exc)

    async def _drain_wildcard(self, sub) -> None:
        """After our rooms' own subscriptions (the outbox is in order): the
        broker sends the rest of what matched, we handle it, and only then
        is a room's gap a gap."""
        try:
            await sub.drain()
        except Exception as exc:
            log.warning("cluster: draining the successor's subscription failed: %r", exc)
        finally:
            self.transitioning = False
            self.gateway.end_reordering()

    async def _ticker(self):
        """Resends, give-ups and forgetting, twice per retransmit period."""
        period = self.gateway.retransmit_after / 2
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            try:
                self.gateway.tick(now)
                self.maybe_quiet()
                self.owner.forget_idle_numberings(now)
            except Exception:           # counted; the next tick runs all the same
                self.stats["internal_errors"] += 1
                log.exception("cluster: the resend tick failed")


CTL_OPS = ("hello", "who", "down")


def read_ctl(data) -> tuple[str, str, int, str | None, tuple[str, int] | None]:
    """(op, slot, epoch, cluster, address) of a control message, every
    field checked (address: (host, port) of the sender's machine, or None)."""
    try:
        msg = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise wire.WireError(f"control message is not JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise wire.WireError("control message is not an object")
    op, slot, epoch, cluster = msg.get("op"), msg.get("slot"), msg.get("epoch"), \
        msg.get("cluster")
    if op not in CTL_OPS:
        raise wire.WireError(f"unknown control op {op!r}")
    if not wire.valid_slot(slot):
        raise wire.WireError(f"control message for a bad slot {slot!r}")
    if not wire.valid_epoch(epoch):
        raise wire.WireError(f"control message with epoch {epoch!r}, not in 1..2**64-1")
    if cluster is not None and not isinstance(cluster, str):
        raise wire.WireError("control message with a cluster that is not a string")
    address = msg.get("addr")
    if address is not None:
        address = read_address(address)
    return op, slot, epoch, cluster, address


def read_address(text) -> tuple[str, int]:
    """("host", port) of "host:port" (an IPv6 host in brackets), checked."""
    if not isinstance(text, str) or not 3 <= len(text) <= 260:
        raise wire.WireError("control message with an address that is not host:port")
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if (not sep or not port.isdigit() or not 1 <= int(port) <= 65535 or not host
            or not all(c.isalnum() or c in ".-_:" for c in host)):
        raise wire.WireError(f"control message with address {text[:64]!r}, not host:port")
    return host, int(port)
