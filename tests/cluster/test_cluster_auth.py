"""Who may use the cluster's broker (issue 26, "The broker"): the private
nats-server of `--workers N` lets in only the processes of its run, and with
`--nats` every NATS credential form and TLS work (netcore_cluster.auth)."""
import os
import shutil
import signal
import subprocess
import sys

import pytest

from netcore_cluster.auth import ENV_FD, AuthError, NatsAuth, redact_url, take_inherited
from netcore_packets import Protocol_pb2 as pb

from cluster_support import (
    ClusterProcess, NatsProcess, Pair, assert_one_order, chat_rounds, clients_on_every_worker,
)
from game_support import in_game, leave

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def proc_file(pid, name):
    with open(f"/proc/{pid}/{name}", "rb") as f:
        return f.read()


async def refused(url, **options):
    """The error a client gets from the broker at url with these options."""
    import nats
    try:
        nc = await nats.connect(url, allow_reconnect=False, connect_timeout=2,
                                max_reconnect_attempts=0, **options)
    except Exception as exc:            # nats.errors.Error: 'Authorization Violation'
        return exc
    await nc.close()
    return None


def test_the_private_broker_lets_in_only_the_processes_of_its_run(run, tmp_path, loop_kind):
    with ClusterProcess(tmp_path, loop_kind, 2) as server:
        url = server.banner.split("NATS ")[1].split(",")[0].split()[0].rstrip(",")
        broker, *_ = [p for p in children(server.proc.pid)
                      if b"nats-server" in proc_file(p, "cmdline")]
        room = server.rooms_owned_by("t-1", 1)[0]

        async def go():
            # Any other process: no credentials, guessed ones: refused, so it
            # can neither listen to a room nor forge a "down" or an op.
            for options in ({}, {"user": "netcore", "password": "guess"}, {"token": "guess"}):
                exc = await refused(url, **options)
                assert exc is not None and "Authorization Violation" in str(exc), options
            # The workers and the supervisor are in: a room across workers works.
            clients = await clients_on_every_worker(server, room=room, per_worker=2)
            await chat_rounds(clients, 3)
            expected = {f"{c.player_id}:{k}" for c in clients for k in range(3)}
            for c in clients:
                await c.wait_chats(len(expected))
            assert_one_order(clients, expected)
            await leave(*clients)
        run(go(), timeout=60)

        # Nothing secret on a command line (every user of the machine sees
        # those) or in an environment: the broker's configuration file is
        # gone since it started, and the workers got theirs through a pipe.
        args = proc_file(broker, "cmdline").split(b"\0")
        config = args[args.index(b"-c") + 1].decode()
        assert not os.path.exists(config) and not os.path.exists(os.path.dirname(config))
        for flag in (b"--user", b"--pass", b"--auth", b"--password"):
            assert flag not in args
        workers = list(server.worker_pids().values())
        for pid in [server.proc.pid, broker, *workers]:
            assert b"password" not in proc_file(pid, "cmdline")
            assert b"password" not in proc_file(pid, "environ")
        assert server.stop() == 0


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1 and a client certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("pki")

    def sh(*args, ext=None):
        if ext is not None:
            (d / "ext.cnf").write_text(ext)
            args = (*args, "-extfile", str(d / "ext.cnf"))
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)
    key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    sh("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
       "-subj", "/CN=netcore test CA")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
                      ("client", "extendedKeyUsage=clientAuth\n")):
        sh("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        sh("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
           "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", ext=ext)
    return d


def nkey_seed_file(path):
    nkeys = pytest.importorskip("nkeys", reason="the NKey form needs nkeys (pip install nkeys)")
    path.write_bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))
    return str(path)


def server_tls(pki, verify):
    return (f'tls {{\n  cert_file: "{pki / "server.pem"}"\n  key_file: "{pki / "server.key"}"\n'
            f'  ca_file: "{pki / "ca.pem"}"\n  verify: {"true" if verify else "false"}\n}}\n')


FORMS = ["user", "token", "nkey", "tls", "mutual-tls"]


@pytest.mark.parametrize("form", FORMS)
def test_workers_use_each_nats_credential_form_and_tls(run, tmp_path, form, request):
    """A deployment's NATS that requires the form: two workers given it
    (ClusterLink(auth=...)) share a room; a client without it is refused."""
    if form == "user":
        auth = NatsAuth(user="game", password="s3cret pass\"word")
        config = auth.server_config()
    elif form == "token":
        auth = NatsAuth(token="t0ken-of-the-deployment")
        config = auth.server_config()
    elif form == "nkey":
        auth = NatsAuth(nkey_seed_file=nkey_seed_file(tmp_path / "user.nk"))
        config = auth.server_config()
    else:
        pki = request.getfixturevalue("pki")
        mutual = form == "mutual-tls"
        auth = NatsAuth(user="game", password="pw", tls_ca_file=str(pki / "ca.pem"),
                        **({"tls_cert_file": str(pki / "client.pem"),
                            "tls_key_file": str(pki / "client.key")} if mutual else {}))
        config = auth.server_config() + server_tls(pki, verify=mutual)
    assert "s3cret" not in repr(auth) and "t0ken" not in repr(auth)

    async def go():
        with NatsProcess(tmp_path, config=config) as broker:
            assert await refused(broker.url) is not None
            if auth.uses_tls:       # the right password without the TLS this server asks for
                assert await refused(broker.url, user="game", password="pw") is not None
            async with Pair(broker, tmp_path, auth=auth) as pair:
                room = pair.owner_of["w-0"]
                (local,) = await in_game(pair.servers["w-0"].port, 1, room=room)
                (remote,) = await in_game(pair.servers["w-1"].port, 1, room=room)
                remote.send_pkt(pb.C_CHAT(msg=f"over {form}"))
                for c in (local, remote):
                    await c.until(lambda c=c: (remote.player_id, f"over {form}") in c.chats)
                await leave(local, remote)
    run(go(), timeout=60)


def test_the_supervisor_hands_its_credentials_to_each_worker_through_a_pipe(run, tmp_path):
    """--nats with credentials: the supervisor connects with them and each
    worker it starts reads them from an inherited descriptor (never argv,
    never the environment), also after a restart."""
    from netcore_cluster.supervisor import Supervisor
    auth = NatsAuth(user="game", password="pipe-secret")
    probe = tmp_path / "worker.py"
    probe.write_text(
        "import asyncio, json, os, sys\n"
        "import nats\n"
        "from netcore_cluster.auth import take_inherited\n"
        "async def main():\n"
        "    auth = take_inherited()\n"
        "    nc = await nats.connect(sys.argv[1], **auth.connect_options())\n"
        "    await nc.close()\n"
        "    with os.fdopen(int(sys.argv[2]), 'w') as status:\n"
        "        status.write('ready ' + json.dumps({'epoch': os.getpid()}) + '\\n')\n"
        "        status.flush()\n"
        "        os.read(int(sys.argv[3]), 1)      # until the supervisor lets go\n"
        "asyncio.run(main())\n")

    async def go():
        with NatsProcess(tmp_path, config=auth.server_config()) as broker:
            def command(worker, status_fd, lifeline_fd):
                return ([sys.executable, str(probe), broker.url, str(status_fd),
                         str(lifeline_fd)], {})
            sup = Supervisor(["p-0", "p-1"], command, nats_servers=[broker.url], host="127.0.0.1",
                             port=0, auth=auth)
            await sup.start()
            try:
                for w in sup.workers:
                    assert w.ready.is_set()
                    assert b"pipe-secret" not in proc_file(w.proc.pid, "environ")
                    assert b"pipe-secret" not in proc_file(w.proc.pid, "cmdline")
                    assert ENV_FD.encode() in proc_file(w.proc.pid, "environ")
            finally:
                sup.stopping = True
                for w in sup.workers:
                    w.proc.send_signal(signal.SIGTERM)
                await sup.stop()
    run(go(), timeout=60)


def test_credentials_are_checked_and_never_shown():
    with pytest.raises(AuthError, match="not user and password and token"):
        NatsAuth(user="a", password="b", token="c").check()
    with pytest.raises(AuthError, match="a user needs a password"):
        NatsAuth(user="a").check()
    with pytest.raises(AuthError, match="needs its key file"):
        NatsAuth(tls_cert_file="/etc/hostname").check()
    with pytest.raises(AuthError, match="cannot be read"):
        NatsAuth(creds_file="/nonexistent/user.creds").check()
    auth = NatsAuth(user="u", password="hidden", tls_ca_file="/ca.pem")
    assert "hidden" not in repr(auth) and "hidden" not in auth.describe()
    assert auth.describe() == "user u, TLS"
    assert NatsAuth.decode(auth.encode()) == auth
    assert redact_url("nats://u:p@host:4222") == "nats://***@host:4222"
    assert redact_url("nats://host:4222") == "nats://host:4222"


def test_a_worker_takes_inherited_credentials_once():
    from netcore_cluster.auth import hand_to_child
    auth = NatsAuth.generate()
    fd = hand_to_child(auth)
    environ = {ENV_FD: str(fd)}
    assert take_inherited(environ) == auth
    assert ENV_FD not in environ
    with pytest.raises(OSError):
        os.fstat(fd)                    # closed once read
    assert take_inherited(environ) is None


def operator_setup(tmp_path):
    """An operator, an account and a user of it, as nsc would make them: the
    server's operator-mode configuration and the user's .creds file."""
    import base64
    import hashlib
    import json
    import time
    nkeys = pytest.importorskip("nkeys", reason="the .creds form needs nkeys (pip install nkeys)")

    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    def keypair(prefix):
        seed = nkeys.encode_seed(os.urandom(32), prefix)
        return seed, nkeys.from_seed(bytearray(seed))

    def jwt(signer, subject, name, nats_claims):
        claims = {"iat": int(time.time()), "iss": signer.public_key.decode(), "name": name,
                  "sub": subject, "nats": {**nats_claims, "version": 2}}
        claims["jti"] = base64.b32encode(hashlib.sha256(json.dumps(claims).encode())
                                         .digest()).decode().rstrip("=")
        head = b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
        body = b64(json.dumps(claims).encode())
        return f"{head}.{body}.{b64(signer.sign(f'{head}.{body}'.encode()))}"

    _, operator = keypair(nkeys.PREFIX_BYTE_OPERATOR)
    _, account = keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    user_seed, user = keypair(nkeys.PREFIX_BYTE_USER)
    unlimited = {"subs": -1, "data": -1, "payload": -1}
    operator_jwt = jwt(operator, operator.public_key.decode(), "netcore-test",
                       {"type": "operator"})
    account_jwt = jwt(operator, account.public_key.decode(), "game",
                      {"type": "account", "limits": {**unlimited, "imports": -1, "exports": -1,
                                                     "wildcards": True, "conn": -1,
                                                     "leaf": -1}})
    user_jwt = jwt(account, user.public_key.decode(), "worker",
                   {"type": "user", "pub": {}, "sub": {}, **unlimited})
    creds = tmp_path / "worker.creds"
    creds.write_text(f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
                     f"-----BEGIN USER NKEY SEED-----\n{user_seed.decode()}\n"
                     f"------END USER NKEY SEED------\n")
    config = (f'operator: "{operator_jwt}"\nresolver: MEMORY\n'
              f'resolver_preload: {{\n  {account.public_key.decode()}: "{account_jwt}"\n}}\n')
    return config, str(creds)


def test_workers_use_a_creds_file(run, tmp_path):
    config, creds = operator_setup(tmp_path)
    auth = NatsAuth(creds_file=creds)

    async def go():
        with NatsProcess(tmp_path, config=config) as broker:
            assert await refused(broker.url) is not None
            async with Pair(broker, tmp_path, auth=auth) as pair:
                room = pair.owner_of["w-0"]
                (local,) = await in_game(pair.servers["w-0"].port, 1, room=room)
                (remote,) = await in_game(pair.servers["w-1"].port, 1, room=room)
                remote.send_pkt(pb.C_CHAT(msg="over creds"))
                for c in (local, remote):
                    await c.until(lambda c=c: (remote.player_id, "over creds") in c.chats)
                await leave(local, remote)
    run(go(), timeout=60)


def test_settings_become_credentials():
    class Settings:
        nats_user = "game"
        nats_password = "pw"
        nats_tls_ca_file = "/etc/ssl/ca.pem"
        port = 7777
    auth = NatsAuth.from_settings(Settings())
    assert auth == NatsAuth(user="game", password="pw", tls_ca_file="/etc/ssl/ca.pem")
    assert auth.uses_tls
    assert NatsAuth.from_settings(object()) == NatsAuth()


def test_netcore_server_takes_its_nats_credentials_from_the_environment_never_a_flag(
        run, tmp_path, loop_kind, capsys):
    """netcore-server --workers 2 --nats URL against a NATS that requires a
    user: NETCORE_NATS_USER and NETCORE_NATS_PASSWORD (or the TOML file) let
    both workers in; the password is no flag, --print-config hides it, and
    half a credential is one line and exit status 2."""
    from netcore_game.cli import build_parser, main as server_main

    auth = NatsAuth(user="game", password="s3cret")
    env = {"NETCORE_NATS_USER": "game", "NETCORE_NATS_PASSWORD": "s3cret"}
    assert "--nats-password" not in build_parser().format_help()
    with NatsProcess(tmp_path, config=auth.server_config()) as broker:
        server = ClusterProcess(tmp_path, loop_kind, 2, "--nats", broker.url, env=env)
        with server:
            async def go():
                clients = await clients_on_every_worker(server, room=1, per_worker=2)
                await chat_rounds(clients, 3)
                expected = {f"{c.player_id}:{k}" for c in clients for k in range(3)}
                for c in clients:
                    await c.until(lambda c=c: len({m for _, m in c.chats} & expected) == 12)
                assert_one_order(clients, expected)
                await leave(*clients)
            run(go(), timeout=60)
            assert "s3cret" not in server.banner
            assert server.stop() == 0
    for var, value in env.items():
        os.environ[var] = value
    try:
        assert server_main(["--nats", "nats://127.0.0.1:4222", "--print-config"]) == 0
        printed = capsys.readouterr().out
        assert "s3cret" not in printed and 'nats-password = "***"' in printed
        del os.environ["NETCORE_NATS_PASSWORD"]
        with pytest.raises(SystemExit) as exit_:
            server_main(["--nats", "nats://127.0.0.1:4222", "--port", "0"])
        assert exit_.value.code == 2
        assert "a user needs a password" in capsys.readouterr().err
    finally:
        for var in env:
            os.environ.pop(var, None)
