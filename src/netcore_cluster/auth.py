"""Credentials and TLS for the cluster's NATS connections.

A broker that anyone can connect to lets any process read every room's
chats, forge a player's ops or a `down` for a live worker. So:

* The private nats-server that `--workers N` runs without `--nats` requires a
  user and a password made per run (`NatsAuth.generate()`). The supervisor
  writes its configuration file, mode 0600 in a directory of its own (0700),
  and removes both once the server has read them; it hands the credentials
  to each worker through a pipe that the worker inherits and reads once
  (`ENV_FD` names its descriptor: the variable holds a number, not the
  secret). Nothing secret is ever on a command line (`ps` shows those to
  every user of the machine) or in the environment.
* With `--nats`, a deployment's own NATS: every credential form NATS has, and
  TLS, from the configuration file or the environment (`NatsAuth`, built by
  the game's settings); the supervisor hands the same to its workers.

`NatsAuth.connect_options()` is what `nats.connect()` takes;
`NatsAuth.server_config()` the matching `authorization` block of a
nats-server configuration (user and password, token, NKey).
"""
from __future__ import annotations

import dataclasses
import json
import os
import secrets
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

# The descriptor a worker reads its broker credentials from (internal: set
# by the supervisor for its workers, never a setting).
ENV_FD = "NETCORE_CLUSTER_AUTH_FD"
NKEYS_HINT = 'pip install nkeys (the NKey and .creds forms of NATS authentication need it)'


class AuthError(ValueError):
    """Credentials that cannot be used; the message names the setting."""


@dataclass(frozen=True)
class NatsAuth:
    """How to authenticate to NATS, and whether over TLS. At most one
    credential form: user and password, a token, an NKey seed file, or a
    `.creds` file (a user JWT and its NKey seed, as `nsc` writes it).

    TLS: `tls_ca_file` verifies the server (else the system's CAs, once any
    TLS setting or a tls:// URL is given), `tls_cert_file` and `tls_key_file`
    are this client's certificate for servers that verify clients, and
    `tls_hostname` the name to check the server's certificate against when
    it is not the URL's host. `tls` alone asks for TLS with none of these."""

    user: str = ""
    password: str = ""
    token: str = ""
    nkey_seed_file: str = ""
    creds_file: str = ""
    tls: bool = False
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_hostname: str = ""

    def __repr__(self) -> str:           # never a secret in a log line or a traceback
        return f"NatsAuth({self.describe()})"

    @classmethod
    def from_settings(cls, settings, prefix: str = "nats_") -> "NatsAuth":
        """From any object with attributes `<prefix><field>` (the game's
        ServerConfig: nats_user, nats_password, nats_token,
        nats_nkey_seed_file, nats_creds_file, nats_tls, nats_tls_ca_file,
        nats_tls_cert_file, nats_tls_key_file, nats_tls_hostname); a missing
        attribute is the field's default."""
        values = {}
        for f in dataclasses.fields(cls):
            value = getattr(settings, prefix + f.name, None)
            if value is not None:
                values[f.name] = value
        return cls(**values)

    @classmethod
    def generate(cls, user: str = "netcore") -> "NatsAuth":
        """A user and a random password for one run of a private broker."""
        return cls(user=user, password=secrets.token_urlsafe(32))

    # -- checks ------------------------------------------------------------------------

    @property
    def uses_tls(self) -> bool:
        return bool(self.tls or self.tls_ca_file or self.tls_cert_file or self.tls_key_file
                     or self.tls_hostname)

    def forms(self) -> list[str]:
        found = []
        if self.user or self.password:
            found.append("user and password")
        if self.token:
            found.append("token")
        if self.nkey_seed_file:
            found.append("nkey seed file")
        if self.creds_file:
            found.append("creds file")
        return found

    def check(self) -> "NatsAuth":
        """Raise AuthError (one line, naming the setting) unless usable."""
        forms = self.forms()
        if len(forms) > 1:
            raise AuthError(f"NATS credentials: give one of user and password, token, "
                            f"nkey seed file or creds file, not {' and '.join(forms)}")
        if (self.user or self.password) and not (self.user and self.password):
            raise AuthError("NATS credentials: a user needs a password, and a password a user")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise AuthError("NATS TLS: a client certificate needs its key file, and a key "
                            "file its certificate")
        for name in ("nkey_seed_file", "creds_file", "tls_ca_file", "tls_cert_file",
                     "tls_key_file"):
            path = getattr(self, name)
            if path and not os.access(path, os.R_OK):
                raise AuthError(f"NATS {name.replace('_', ' ')} {path}: cannot be read")
        if self.nkey_seed_file or self.creds_file:
            try:
                import nkeys  # noqa: F401
            except ImportError:
                raise AuthError(f"NATS {forms[0]}: {NKEYS_HINT}") from None
        return self

    def describe(self) -> str:
        """What is used, without any secret: `user netcore`, `token, TLS`."""
        parts = []
        if self.user:
            parts.append(f"user {self.user}")
        if self.token:
            parts.append("token")
        if self.nkey_seed_file:
            parts.append(f"nkey seed file {self.nkey_seed_file}")
        if self.creds_file:
            parts.append(f"creds file {self.creds_file}")
        if self.uses_tls:
            parts.append("TLS")
        return ", ".join(parts) or "no authentication"

    # -- as nats.connect() takes it ----------------------------------------------------

    def connect_options(self) -> dict:
        """Keyword arguments for nats.connect()."""
        options: dict = {}
        if self.user:
            options["user"] = self.user
            options["password"] = self.password
        if self.token:
            options["token"] = self.token
        if self.nkey_seed_file:
            options["nkeys_seed"] = self.nkey_seed_file
        if self.creds_file:
            options["user_credentials"] = self.creds_file
        if self.uses_tls:
            options["tls"] = self.ssl_context()
            if self.tls_hostname:
                options["tls_hostname"] = self.tls_hostname
        return options

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.tls_ca_file or None)
        if self.tls_cert_file:
            context.load_cert_chain(self.tls_cert_file, self.tls_key_file)
        return context

    # -- as nats-server takes it --------------------------------------------------------

    def server_config(self) -> str:
        """The `authorization` block a nats-server needs to let this in (user
        and password, token or NKey; a .creds file needs an operator setup)."""
        if self.creds_file:
            raise AuthError("a .creds file is checked by an operator-mode nats-server "
                            "(nsc); there is no authorization block for it")
        if self.nkey_seed_file:
            import nkeys
            with open(self.nkey_seed_file, "rb") as f:
                public = nkeys.from_seed(bytearray(f.read().strip())).public_key.decode()
            return f"authorization {{\n  users: [ {{ nkey: {_quote(public)} }} ]\n}}\n"
        if self.token:
            return f"authorization {{\n  token: {_quote(self.token)}\n}}\n"
        if self.user:
            return (f"authorization {{\n  user: {_quote(self.user)}\n"
                    f"  password: {_quote(self.password)}\n}}\n")
        return ""

    # -- handed from the supervisor to its workers ---------------------------------------

    def encode(self) -> bytes:
        return json.dumps({k: v for k, v in dataclasses.asdict(self).items() if v}).encode()

    @classmethod
    def decode(cls, data: bytes) -> "NatsAuth":
        fields = {f.name for f in dataclasses.fields(cls)}
        values = json.loads(data)
        if not isinstance(values, dict) or not set(values) <= fields:
            raise AuthError("credentials handed to the worker do not parse")
        return cls(**values)


def _quote(text: str) -> str:
    """A nats-server configuration string: JSON's quoting is what it reads."""
    return json.dumps(text)


def hand_to_child(auth: NatsAuth) -> int:
    """A pipe's read end holding the encoded credentials, its write end
    closed: pass it to the child (pass_fds) with ENV_FD naming it, then close
    it here. The credentials fit a pipe's buffer many times over."""
    data = auth.encode()
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, data)
    finally:
        os.close(write_fd)
    return read_fd


def take_inherited(environ=os.environ) -> NatsAuth | None:
    """In a worker: the credentials its supervisor handed over (once: the
    variable is removed and the descriptor closed), or None."""
    fd_text = environ.pop(ENV_FD, None)
    if fd_text is None:
        return None
    fd = int(fd_text)
    chunks = []
    try:
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    return NatsAuth.decode(b"".join(chunks))


def redact_url(url: str) -> str:
    """A NATS URL fit for a log line: any user:password@ in it hidden."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))
