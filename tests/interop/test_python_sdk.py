"""Interop: the vendor's official Python SDK (PyPI `volcengine`) drives a real Herald.

The SDK has no messaging actions built in, so, as a business server would, the test registers the
four actions on the SDK's generic `Service` under both API versions, points it at Herald and checks
that what it sends reaches the right `herald client` processes through the right callbacks.
"""

import base64
import json
import os
import queue
import socket
import subprocess
import threading
import time
import urllib.request

import pytest
from volcengine.ApiInfo import ApiInfo
from volcengine.Credentials import Credentials
from volcengine.ServiceInfo import ServiceInfo
from volcengine.base.Service import Service

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERALD = os.environ.get("HERALD_BIN", os.path.join(ROOT, "target", "debug", "herald"))
APP_ID = "65a1b2c3d4e5f60718293a4b"
APP_KEY = "0123456789abcdef0123456789abcdef"
AK = "AKLTinteropexample0001"
SK = "interop/secret+key=="
ACTIONS = ["SendUnicast", "SendRoomUnicast", "BatchSendRoomUnicast", "SendBroadcast"]
VERSIONS = ["2020-12-01", "2023-07-20"]
WAIT = 10.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = free_port()
    cfg = tmp_path_factory.mktemp("herald") / "herald.toml"
    cfg.write_text(
        f"""
listen = "127.0.0.1:{port}"
region = "cn-north-1"
[[apps]]
app_id = "{APP_ID}"
app_key = "{APP_KEY}"
qps_limit = 500
access_keys = [{{ ak = "{AK}", sk = "{SK}" }}]
"""
    )
    proc = subprocess.Popen([HERALD, "serve", "--config", str(cfg)], stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + WAIT
    while True:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("herald serve did not come up")
            time.sleep(0.05)
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


def token(uid, room=""):
    args = [HERALD, "token", "--app-id", APP_ID, "--app-key", APP_KEY, "--uid", uid]
    if room:
        args += ["--room", room]
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


class Client:
    """A `herald client` process: calls in on stdin, one JSON event per line out."""

    def __init__(self, host):
        self.proc = subprocess.Popen(
            [HERALD, "client", "--server", f"http://{host}", "--app-id", APP_ID],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.events = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def call(self, **call):
        self.proc.stdin.write(json.dumps(call) + "\n")
        self.proc.stdin.flush()

    def next_event(self):
        try:
            return self.events.get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError("no event arrived") from None

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=WAIT)


def sdk(host, sk=SK):
    info = ServiceInfo(
        host, {"Accept": "application/json"}, Credentials(AK, sk, "rtc", "cn-north-1"), 5, 5, scheme="http"
    )
    apis = {
        f"{action}@{version}": ApiInfo("POST", "/", {"Action": action, "Version": version}, {}, {})
        for action in ACTIONS
        for version in VERSIONS
    }
    svc = Service(info, apis)
    svc.set_ak(AK)
    svc.set_sk(sk)
    return svc


def call(svc, action, version, body):
    text = svc.json(f"{action}@{version}", {}, json.dumps(body, separators=(",", ":")))
    return json.loads(text)


def expect(client, event, **fields):
    """The client's next event is `event`, with at least these fields."""
    got = client.next_event()
    assert got.get("event") == event, got
    for k, v in fields.items():
        assert got.get(k) == v, (k, got)
    return got


def login(client, uid):
    client.call(call="login", token=token(uid), uid=uid)
    expect(client, "onLoginResult", uid=uid, errorCode=0)


def join(client, room, uid):
    client.call(call="joinRoom", roomId=room, uid=uid, token=token(uid, room))
    expect(client, "onRoomStateChanged", roomId=room, uid=uid, state=0)


@pytest.fixture(scope="module")
def clients(server):
    alice, bob = Client(server), Client(server)
    login(alice, "alice")
    login(bob, "bob")
    join(alice, "room1", "alice")
    join(bob, "room1", "bob")
    # Room members are told of each other (presence events are on by default).
    expect(alice, "onUserJoined", roomId="room1", uid="bob")
    expect(bob, "onUserJoined", roomId="room1", uid="alice")
    yield alice, bob
    alice.close()
    bob.close()


def fence(svc, client, uid, version):
    """Sends `client` a unique marker and asserts it is the next thing it gets: proves nothing
    else (a stray message meant for someone else) arrived before it."""
    marker = f"fence-{time.monotonic_ns()}"
    body = {"AppId": APP_ID, "From": "server_bot", "To": uid, "Binary": False, "Message": marker}
    call(svc, "SendUnicast", version, body)
    expect(client, "onUserMessageReceivedOutsideRoom", uid="server_bot", message=marker)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("binary", [False, True])
def test_every_action_reaches_the_right_users(server, clients, version, binary):
    alice, bob = clients
    svc = sdk(server)
    raw = "héllo from the python sdk".encode() if not binary else bytes(range(256))
    message = base64.b64encode(raw).decode() if binary else raw.decode()
    suffix = "Binary" if binary else ""

    def check(resp, action):
        meta = resp["ResponseMetadata"]
        assert resp["Result"] == {"Message": "Success"}
        assert (meta["Action"], meta["Version"], meta["Service"], meta["Region"]) == (
            action, version, "rtc", "cn-north-1")
        assert meta["RequestId"] and "Error" not in meta

    def received(client, event, **fields):
        got = expect(client, event, uid="server_bot", message=message, **fields)
        assert got.get("binary", False) == binary
        assert got["msgid"] > 0
        return got

    # SendUnicast: alice only.
    body = {"AppId": APP_ID, "From": "server_bot", "To": "alice", "Binary": binary, "Message": message}
    check(call(svc, "SendUnicast", version, body), "SendUnicast")
    first = received(alice, f"onUser{suffix}MessageReceivedOutsideRoom")
    fence(svc, bob, "bob", version)

    # SendRoomUnicast: bob only, in room1.
    body = {"AppId": APP_ID, "RoomId": "room1", "From": "server_bot", "To": "bob", "Binary": binary,
            "Message": message}
    check(call(svc, "SendRoomUnicast", version, body), "SendRoomUnicast")
    received(bob, f"onUser{suffix}MessageReceived", roomId="room1")
    fence(svc, alice, "alice", version)

    # BatchSendRoomUnicast: both, plus a user who is not in the room.
    body = {"AppId": APP_ID, "RoomId": "room1", "From": "server_bot", "To": ["alice", "bob", "carol"],
            "Binary": binary, "Message": message}
    check(call(svc, "BatchSendRoomUnicast", version, body), "BatchSendRoomUnicast")
    second = received(alice, f"onUser{suffix}MessageReceived", roomId="room1")
    received(bob, f"onUser{suffix}MessageReceived", roomId="room1")
    # msgid increases per receiving connection: alice got a fence in between.
    assert second["msgid"] == first["msgid"] + 2

    # SendBroadcast: everyone in room1.
    body = {"AppId": APP_ID, "RoomId": "room1", "From": "server_bot", "Binary": binary, "Message": message}
    check(call(svc, "SendBroadcast", version, body), "SendBroadcast")
    received(alice, f"onRoom{suffix}MessageReceived", roomId="room1")
    received(bob, f"onRoom{suffix}MessageReceived", roomId="room1")


def test_errors_come_back_as_the_vendor_envelope(server, clients):
    svc = sdk(server, sk="not-the-secret")
    body = {"AppId": APP_ID, "From": "server_bot", "To": "alice", "Binary": False, "Message": "x"}
    # The SDK raises on any non-200 answer, with the body as the exception text.
    with pytest.raises(Exception) as e:
        call(svc, "SendUnicast", "2023-07-20", body)
    env = json.loads(e.value.args[0].decode())
    assert env["ResponseMetadata"]["Error"]["Code"] == "SignatureDoesNotMatch"
    assert env["ResponseMetadata"]["Error"]["CodeN"] == 100010
    assert "Result" not in env

    svc = sdk(server)
    body["From"] = "alice"  # a logged-in user's id
    with pytest.raises(Exception) as e:
        call(svc, "SendUnicast", "2023-07-20", body)
    env = json.loads(e.value.args[0].decode())
    assert env["ResponseMetadata"]["Error"]["Code"] == "InvalidParameter.IllegalFrom"
