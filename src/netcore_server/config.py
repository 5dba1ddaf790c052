"""ServerConfig: every setting of a server built on netcore_server.

Each field is one setting, the same for every game: a flag of `<game>-server`
(in this order in its --help), a key of its TOML file and an environment
variable NETCORE_<NAME>; `setting()` holds the checks of its value, applied
wherever it comes from (settings.py), and its help. validate() adds how
values combine.

A game with settings of its own subclasses it (a dataclass too) and extends
validate(); its fields then come after these in every listing:

    @dataclass
    class MyConfig(ServerConfig):
        tick_rate: float = setting(20.0, min=1, max=60, help="room ticks per second")
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from netcore import HEADER, MAX_PACKET_SIZE
from netcore import tcp
from netcore.addresses import DEFAULT_EXEMPT, parse_networks
from netcore.loop import LOOP_KINDS
from netcore.origins import DEFAULT_ORIGINS, OriginPolicy
from netcore.service import TCP_TRANSPORTS

from netcore_cluster.auth import AuthError, NatsAuth

from netcore_server.db import check_db_setting
from netcore_server.settings import ConfigError, checked, setting

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def workers_from_text(text: str) -> int:
    """`--workers auto`: one per core."""
    return (os.cpu_count() or 1) if text.strip().lower() == "auto" else int(text)


@dataclass
class ServerConfig:
    host: str = setting("127.0.0.1", help="address to listen on")
    port: int = setting(7777, min=0, max=65535, help="0 picks a free port")
    db: str = setting("netcore.db", help=(
        "SQLite file, created on first run, or a PostgreSQL URL "
        "postgresql://user:password@host:port/dbname (pip install \"netcore[postgres]\")"))
    max_sessions: int = setting(20000, min=1, help="connections served at once; more are refused")
    # Client packets are small: a game's largest legal one is far below this.
    max_packet_size: int = setting(4096, min=HEADER + 1, max=MAX_PACKET_SIZE,
                                   help="largest packet a client may send")
    max_pending_bytes: int = setting(1 << 20, min=1, help=(
        "per-session unsent bytes before it is cut off as a slow consumer"))
    # Per client, packets/s in bursts of up to packet_burst (rate 0: no limit):
    # a flood is cut after its burst, while players, and netcore-dummy at its
    # 1 chat/s, stay far below.
    packet_rate: float = setting(100.0, min=0, help=(
        "packets/s each client may send; more closes it as rate limited (0: no limit)"))
    packet_burst: int = setting(200, min=0,
                                help="packets a client may send at once above the rate")
    # Packets handled per client read before the rest waits a loop iteration:
    # a flooding client gets its turn, not the whole loop. Players send a few.
    max_packets_per_read: int = setting(64, min=0, help=(
        "packets of one client handled per read before others get a turn (0: no cap)"))
    login_timeout: float = setting(10.0, min=0,
                                   help="seconds a connection has to log in (0: no limit)")
    idle_timeout: float = setting(0.0, min=0, help=(
        "seconds a logged-in client may send nothing (0: no limit)"))
    db_busy_timeout: float = setting(10.0, min=0, help=(
        "SQLite: seconds to wait for a database lock held by another process"))
    # PostgreSQL (db = "postgresql://..."): connections of each worker process,
    # and the bounds on every wait for the database (netcore_server.db_postgres).
    db_pool_size: int = setting(4, min=1, max=1000, help=(
        "PostgreSQL: connections of each worker process (see docs/operations.md)"))
    db_connect_timeout: float = setting(5.0, min=0, help=(
        "PostgreSQL: seconds to connect, or to wait for a free connection"))
    db_statement_timeout: float = setting(5.0, min=0, help=(
        "PostgreSQL: seconds a statement may take; past it that login fails"))
    flush_interval_ms: float = setting(0.0, min=0, help=(
        "under load, write to each client at most this often (0: every loop iteration); "
        "trades up to this much latency for far fewer syscalls"))
    metrics_port: int = setting(0, min=0, max=65535,
                                help="serve Prometheus metrics on this port (0: off)")
    metrics_host: str = setting("127.0.0.1", help="address of the metrics endpoint")
    # WebSocket (netcore.websocket): browsers and web builds of game engines
    # speak the same packets in binary messages on this port, which also
    # serves the game's pages (Game.pages). 0 is off.
    ws_port: int = setting(0, min=0, max=65535, help=(
        "serve WebSocket clients (browsers, web builds) and the game's page on this port "
        "(0: off)"))
    # Pages of which origins may open a WebSocket (netcore.origins): the
    # server's own page and loopback ones by default; "*" is any.
    ws_origins: str = setting(DEFAULT_ORIGINS, help=(
        "web pages that may connect: self, loopback, *, null or exact origins, "
        "comma-separated"))
    # Largest WebSocket message a client may send (whole packets, or the
    # fragments of one message put together); a larger one closes it (1009).
    ws_max_message_bytes: int = setting(65536, min=HEADER + 1, max=16 << 20, help=(
        "largest WebSocket message a client may send; larger closes it (1009)"))
    # A connection to the WebSocket port is no session until its HTTP upgrade
    # is done, but it holds a descriptor: these bound it (netcore.websocket).
    ws_handshake_timeout: float = setting(5.0, min=0, help=(
        "seconds a WebSocket connection has from its connect to a finished upgrade; then "
        "aborted"))
    ws_max_upgrades: int = setting(1024, min=1, help=(
        "WebSocket connections in their upgrade at once, server-wide; more are aborted"))
    ws_max_upgrades_per_address: int = setting(16, min=0, help=(
        "WebSocket connections in their upgrade at once from one address; more are aborted "
        "(0: no cap)"))
    # Per source address (an IPv4 address, an IPv6 /64). Clients from these
    # networks are not counted by any per-address limit: loopback, where
    # tests, benchmarks and a proxy on the same host connect from. "" is none.
    exempt_networks: str = setting(DEFAULT_EXEMPT, help=(
        "comma-separated networks no per-address limit counts (\"\": none)"))
    # Proxies whose word on their client's address is taken (netcore.proxy):
    # a TCP connection from these networks must begin with a PROXY header (v1
    # or v2), a WebSocket upgrade from them names its client in Forwarded or
    # X-Forwarded-For (or, with ws_proxy_protocol, a PROXY header too). None
    # by default: a header from an untrusted peer could claim any address.
    trusted_proxies: str = setting("", help=(
        "comma-separated networks of proxies that name their clients: a PROXY header on the "
        "game port, Forwarded / X-Forwarded-For on the WebSocket port (\"\": none)"))
    proxy_header_timeout: float = setting(5.0, min=0, help=(
        "seconds a trusted proxy's connection has to send its whole PROXY header; then closed"))
    ws_proxy_protocol: bool = setting(False, help=(
        "the WebSocket port's trusted proxies are TCP proxies that send a PROXY header first "
        "(false: HTTP proxies that send Forwarded / X-Forwarded-For)"))
    # A game cafe or a carrier NAT puts many honest players behind one
    # address: the per-address defaults are generous.
    max_sessions_per_address: int = setting(1000, min=0, help=(
        "connections from one address (an IPv6 /64) at once; more are refused (0: no cap)"))
    # TCP keepalive: a vanished peer is found after idle + 3 * interval
    # seconds (90 s); a silent but alive one stays (see idle_timeout).
    keepalive_idle: float = setting(60.0, min=0, max=32767, help=(
        "seconds of silence before TCP keepalive probes find a vanished client (0: off)"))
    keepalive_interval: float = setting(10.0, min=1, max=32767, help=(
        "seconds between keepalive probes; 3 unanswered end the connection"))
    # Whose transports carry the TCP connections (netcore.tcp.pxd): netcore's
    # own (accept4, a descriptor, no transport object of the loop's), the
    # event loop's, or auto: netcore's under uvloop on Linux, else the loop's.
    tcp_transport: str = setting("auto", choices=TCP_TRANSPORTS, help=(
        "whose transports carry TCP connections: netcore's own, the event loop's, or auto "
        "(netcore's under uvloop on Linux)"))
    # Listening sockets per address (SO_REUSEPORT group): with uvloop's own
    # transports libuv accepts one connection per socket per loop iteration,
    # so a login storm is accepted this many per iteration
    # (netcore.service.pxd). 0: 16 for uvloop's transports on Linux, else 1.
    listen_sockets: int = setting(0, min=0, max=64, help=(
        "listening sockets per address sharing the port, each accepting one connection per "
        "loop iteration with uvloop's transports (0: 16 for those on Linux, else 1)"))
    max_pending_bytes_total: int = setting(256 << 20, min=0, help=(
        "unsent bytes of all clients together; past it the largest are cut off (0: no bound)"))
    # Named logins (scrypt on the database pool; see netcore_server.logins).
    max_logins_in_flight: int = setting(64, min=1, help=(
        "named logins waiting for the database; more are refused at once"))
    max_logins_in_flight_per_address: int = setting(8, min=1, help=(
        "named logins from one address waiting for the database; more are refused at once"))
    max_failed_logins: int = setting(3, min=0, help=(
        "wrong passwords on one connection before it is closed (0: no limit)"))
    address_window: float = setting(600.0, min=0, help=(
        "seconds over which failed logins and new accounts per address are counted"))
    max_failed_logins_per_address: int = setting(100, min=0, help=(
        "wrong passwords from one address per window; then its named logins wait "
        "(0: no limit)"))
    max_new_accounts_per_address: int = setting(50, min=0, help=(
        "accounts created from one address per window; then new names are refused "
        "(0: no limit)"))
    # Resumption (netcore_server.resume): how long a dropped resumable
    # client's player stays in its room, and how much sent to it is kept.
    resume_window: float = setting(30.0, min=0, max=3600, help=(
        "seconds a resumable client that dropped keeps its place (0: no resumes)"))
    resume_buffer_bytes: int = setting(256 << 10, min=1024, max=64 << 20, help=(
        "bytes of packets kept per resumable client for its resume"))
    # Where the other machines of a cluster reach this one's game port: a
    # resume that lands on another machine is relayed here (netcore_server.relay).
    advertise_host: str = setting("", help=(
        "the address other machines of the cluster reach this one's game port at, for "
        "resumes that land there (\"\": --host, or this machine's name where --host is "
        "a wildcard)"))
    max_room_players: int = setting(5000, min=1,
                                    help="players in one room; more are refused")
    max_room_queue: int = setting(10000, min=1, help=(
        "jobs waiting in one room; a client's job past it is dropped and counted"))
    peer_log_rate: float = setting(20.0, min=0, help=(
        "log lines/s about single clients, server-wide; the rest are counted (0: no limit)"))
    log_summary_seconds: float = setting(60.0, min=0, help=(
        "log an INFO summary (sessions, rooms, rates, refusals) this often (0: off)"))
    # S_LOGIN and S_ENTER_GAME success replies laid out by hand, not through
    # protobuf (netcore_server.replies): the same bytes, cheaper in a login
    # storm. false builds them through protobuf, to rule them out.
    fast_replies: bool = setting(True, help=(
        "S_LOGIN and S_ENTER_GAME success replies laid out by hand, the bytes protobuf makes "
        "(false: built through protobuf)"))
    # Scale-out (netcore_cluster): worker processes on this machine, the NATS
    # servers that join them to each other and to other machines ("" with one
    # worker: no broker; "" with several: a private nats-server), this node's
    # name, and every node's worker count when there are several machines.
    workers: int = setting(1, min=1, max=1024, parse=workers_from_text, metavar="N", help=(
        "worker processes sharing the port (auto: one per core); more than 1 joins them "
        "over NATS"))
    # --nats is a repeatable flag of its own (cli.py): "" here.
    nats: str = setting("", flag=False)
    # How to authenticate to the --nats servers (netcore_cluster.auth): at most
    # one credential form, and TLS. Secrets: the TOML file or NETCORE_NATS_*
    # only, never a flag (a command line is visible to every user in `ps`).
    # The private nats-server of --workers without --nats makes its own.
    nats_user: str = setting("", flag=False)
    nats_password: str = setting("", flag=False)
    nats_token: str = setting("", flag=False)
    nats_nkey_seed_file: str = setting("", flag=False)
    nats_creds_file: str = setting("", flag=False)
    nats_tls: bool = setting(False, flag=False)
    nats_tls_ca_file: str = setting("", flag=False)
    nats_tls_cert_file: str = setting("", flag=False)
    nats_tls_key_file: str = setting("", flag=False)
    nats_tls_hostname: str = setting("", flag=False)
    node_id: str = setting("", help=(
        "this machine's name in the cluster (default: the host name)"))
    cluster: str = setting("", help=(
        "every machine's workers, node=N[,node=N...], the same on every node "
        "(default: this node alone)"))
    cluster_prefix: str = setting("netcore", help="NATS subject prefix of this deployment")
    loop: str | None = setting(None, choices=LOOP_KINDS, help="event loop",
                               shown_default="uvloop when installed")
    log_level: str = setting("INFO", choices=LOG_LEVELS, normalize=str.upper,
                             help="logging threshold")

    def validate(self) -> None:
        """Every value within its field's checks (ValueError naming it), and
        the values fit together. A game's subclass extends it (super() first)."""
        try:
            checked(self)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        if self.packet_rate > 0 and self.packet_burst < 1:
            raise ValueError(f"packet-burst {self.packet_burst}: must be >= 1 when there is a "
                             f"packet rate")
        for name in ("db_connect_timeout", "db_statement_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name.replace('_', '-')} {getattr(self, name)}: must be > 0 "
                                 f"seconds")
        check_db_setting(self.db)
        if self.address_window <= 0:
            raise ValueError(f"address-window {self.address_window}: must be > 0 seconds")
        if 0 < self.keepalive_idle < 1:
            raise ValueError(f"keepalive-idle {self.keepalive_idle}: must be 0 (off) or "
                             f"1..32767 s")
        if self.tcp_transport == "netcore" and not tcp.AVAILABLE:
            raise ValueError("tcp-transport netcore: needs Linux; auto or loop work everywhere")
        try:
            parse_networks(self.exempt_networks)
        except ValueError as exc:
            raise ValueError(f"exempt-networks {self.exempt_networks!r}: {exc}") from None
        try:
            parse_networks(self.trusted_proxies)
        except ValueError as exc:
            raise ValueError(f"trusted-proxies {self.trusted_proxies!r}: {exc}") from None
        if self.proxy_header_timeout <= 0:
            raise ValueError(f"proxy-header-timeout {self.proxy_header_timeout}: must be > 0 "
                             f"seconds")
        try:
            OriginPolicy(self.ws_origins)
        except ValueError as exc:
            raise ValueError(f"ws-origins {self.ws_origins!r}: {exc}") from None
        if self.ws_max_message_bytes < self.max_packet_size:
            raise ValueError(f"ws-max-message-bytes {self.ws_max_message_bytes} cannot carry a "
                             f"packet of max-packet-size {self.max_packet_size}")
        if self.ws_handshake_timeout <= 0:
            raise ValueError(f"ws-handshake-timeout {self.ws_handshake_timeout}: must be > 0 "
                             f"seconds")
        if self.nats:
            try:
                NatsAuth.from_settings(self).check()
            except AuthError as exc:
                raise ValueError(str(exc)) from None
        if self.ws_port and self.ws_port == self.port:
            raise ValueError(f"ws-port {self.ws_port}: the game port is {self.port}; "
                             f"they must differ")
