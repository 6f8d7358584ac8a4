"""Fake FCM and APNs servers for the push-provider API tests (docs/CONTRACT.md, issue 14).

Nothing here talks to a server at import time. The fakes check every request against the
providers' published formats and record what they found wrong in `problems` (a test asserts
there are none); they answer each documented error under test control.

- make_pki(dir): a throw-away CA and a server certificate for 127.0.0.1 (python3-cryptography),
  so the fakes speak real TLS and natter-worker checks them through NATTER_PUSH_CA_FILE.
- FcmFake: the OAuth 2.0 token endpoint (the service account's token_uri) and
  POST /v1/projects/<project>/messages:send, over HTTPS (HTTP/1.1). The token endpoint
  verifies the RS256 assertion with the service account's public key and its claims (iss,
  scope, aud, iat, exp, header alg/typ/kid); messages:send checks the bearer token it issued,
  the Content-Type and the body against the FCM v1 Message resource.
- ApnsFake: APNs over HTTP/2 with TLS and ALPN h2 (python3-h2): checks :method, :scheme,
  :path, the ES256 provider token (signature r||s with the key's public half, kid, iss, iat),
  apns-topic, apns-push-type, apns-priority, apns-expiration, apns-collapse-id and the
  payload (JSON, at most 4096 bytes, the aps dictionary of its push type).

Scripts: `fake.script = fn(req) -> Answer | int`, or by device token with
`fake.per_token({token: [Answer, Answer, ...]})` (the last repeats). Helpers build the
documented errors: fcm_error(404, "NOT_FOUND", "UNREGISTERED"), apns_error(410, "Unregistered").
"""
from __future__ import annotations

import base64
import datetime
import http.server
import ipaddress
import json
import re
import secrets
import select
import socket
import ssl
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pushlib import PushStack

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_PROJECT = "natter-test-project"
APNS_TOPIC = "org.natter.app"
APNS_KEY_ID = "KEY4TESTS1"
APNS_TEAM_ID = "TEAM4TESTS"
TTL_RE = re.compile(r"^\d+(\.\d{1,9})?s$")
RESERVED_DATA_KEYS = {"from", "notification", "message_type"}


def b64url_decode(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def new_apns_token() -> str:
    return secrets.token_hex(32)


def new_fcm_token() -> str:
    return "fcm-" + secrets.token_urlsafe(24)


# --------------------------------------------------------------------------- keys

def make_pki(directory: Path) -> dict:
    """A CA and a server certificate for 127.0.0.1/localhost: {'ca', 'cert', 'key'} paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "natter test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    paths = {"ca": directory / "ca.pem", "cert": directory / "server.pem",
             "key": directory / "server-key.pem"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    for p in paths.values():
        p.chmod(0o600)
    return paths


def server_context(pki: dict, alpn: list[str]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(pki["cert"]), str(pki["key"]))
    ctx.set_alpn_protocols(alpn)
    return ctx


# --------------------------------------------------------------------------- answers

@dataclass
class Answer:
    status: int = 200
    body: object = None            # dict (sent as JSON) or None (the provider's success body)
    headers: dict = field(default_factory=dict)
    stall: float = 0.0             # seconds before answering (FCM fake only)


def fcm_error(status: int, rpc_status: str, error_code: str | None = None,
              token_field: bool = False, retry_after: int | None = None) -> Answer:
    """An FCM v1 error answer (google.rpc.Status with FcmError / BadRequest details)."""
    details = []
    if error_code:
        details.append({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                        "errorCode": error_code})
    if token_field:
        details.append({"@type": "type.googleapis.com/google.rpc.BadRequest",
                        "fieldViolations": [{"field": "message.token",
                                             "description": "Invalid registration token"}]})
    body = {"error": {"code": status, "message": f"test: {rpc_status}", "status": rpc_status,
                      "details": details}}
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    return Answer(status, body, headers)


def apns_error(status: int, reason: str, retry_after: int | None = None) -> Answer:
    body = {"reason": reason}
    if status == 410:
        body["timestamp"] = int(time.time() * 1000)
    headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
    return Answer(status, body, headers)


@dataclass
class FakeRequest:
    index: int
    kind: str                       # "token" | "send"
    arrived: float                  # time.monotonic()
    path: str
    headers: dict                   # lower-case names
    raw: bytes
    json: object = None
    token: str | None = None        # the device token it was for (send)
    problems: list = field(default_factory=list)
    status: int | None = None
    outcome: str = "pending"        # pending | answered | client gone

    def summary(self) -> str:
        return (f"#{self.index} {self.kind} {self.path} token={self.token} -> {self.status} "
                f"({self.outcome}) problems={self.problems} {self.raw[:300]!r}")


class _Recorder:
    """What both fakes share: the record of requests and the script."""

    def __init__(self):
        self._cond = threading.Condition()
        self._records: list[FakeRequest] = []
        self.script = lambda req: Answer()
        self.closing = threading.Event()

    def per_token(self, table: dict):
        """Script: the n-th send for a token gets table[token][n] (the last repeats);
        other tokens get 200."""
        def script(req):
            answers = table.get(req.token)
            if not answers:
                return Answer()
            n = sum(1 for r in self.requests() if r.kind == "send" and r.token == req.token
                    and r.index < req.index)
            return answers[min(n, len(answers) - 1)]
        self.script = script

    def _record(self, req: FakeRequest):
        with self._cond:
            req.index = len(self._records)
            self._records.append(req)
            self._cond.notify_all()

    def _finish(self, req, status, outcome):
        with self._cond:
            req.status, req.outcome = status, outcome
            self._cond.notify_all()

    def _answer(self, req) -> Answer:
        if req.problems:     # a malformed request gets what the provider would answer
            return fcm_error(400, "INVALID_ARGUMENT") if isinstance(self, FcmFake) \
                else apns_error(400, "BadRequest")
        a = self.script(req)
        return Answer(a) if isinstance(a, int) else a

    def requests(self, pred=None) -> list[FakeRequest]:
        with self._cond:
            recs = list(self._records)
        return [r for r in recs if pred is None or pred(r)]

    def sends(self, token=None) -> list[FakeRequest]:
        return self.requests(lambda r: r.kind == "send" and (token is None or r.token == token))

    def problems(self) -> list[str]:
        return [f"{r.summary()}" for r in self.requests() if r.problems]

    def wait_until(self, cond, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = cond(list(self._records))
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.2))
        pytest.fail(f"{type(self).__name__}: timed out after {timeout} s waiting for {what};"
                    f" received:\n{self.dump()}", pytrace=False)

    def wait_sends(self, n: int, timeout: float, token=None, status: int | None = None):
        def cond(recs):
            got = [r for r in recs if r.kind == "send" and (token is None or r.token == token)
                   and r.outcome == "answered" and (status is None or r.status == status)]
            return got if len(got) >= n else None
        return self.wait_until(cond, timeout, f"{n} answered send(s)"
                               + (f" for {token}" if token else "")
                               + (f" with status {status}" if status else ""))

    def dump(self) -> str:
        return "\n".join(r.summary() for r in self.requests()) or "(nothing)"


# --------------------------------------------------------------------------- FCM

class FcmFake(_Recorder):
    """FCM HTTP v1 and Google's OAuth 2.0 token endpoint on https://127.0.0.1:<port>."""

    def __init__(self, pki: dict, directory: Path, project: str = FCM_PROJECT):
        super().__init__()
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.project = project
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_key = self.key.public_key()
        self.key_id = secrets.token_hex(20)
        self.client_email = f"natter-push@{project}.iam.gserviceaccount.com"
        self.issued: dict[str, float] = {}      # access token -> expiry (time.time())
        self.token_lifetime = 3599
        self._server = _ThreadingServer(("127.0.0.1", 0), _fcm_handler(self))
        self._server.socket = server_context(pki, ["http/1.1"]).wrap_socket(
            self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self.credentials = directory / "fcm-service-account.json"
        self.credentials.write_text(json.dumps({
            "type": "service_account", "project_id": project, "private_key_id": self.key_id,
            "private_key": self.key.private_bytes(serialization.Encoding.PEM,
                                                  serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()).decode(),
            "client_email": self.client_email, "client_id": "1234567890",
            "token_uri": self.token_uri,
        }))
        self.credentials.chmod(0o600)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    def env(self) -> dict:
        return {"NATTER_PUSH_FCM_CREDENTIALS": str(self.credentials),
                "NATTER_PUSH_FCM_URL": self.base_url}

    def token_requests(self) -> list[FakeRequest]:
        return self.requests(lambda r: r.kind == "token")

    # -- checks
    def check_assertion(self, form: dict, problems: list):
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        if form.get("grant_type") != [JWT_BEARER]:
            problems.append(f"grant_type {form.get('grant_type')!r}")
        assertion = (form.get("assertion") or [""])[0]
        parts = assertion.split(".")
        if len(parts) != 3:
            problems.append("assertion is not a JWS compact serialisation")
            return
        try:
            header, claims = json.loads(b64url_decode(parts[0])), json.loads(b64url_decode(parts[1]))
            sig = b64url_decode(parts[2])
        except ValueError as exc:
            problems.append(f"assertion does not decode: {exc}")
            return
        if header.get("alg") != "RS256" or header.get("typ", "JWT") != "JWT":
            problems.append(f"assertion header {header}")
        if header.get("kid") not in (None, self.key_id):
            problems.append(f"assertion kid {header.get('kid')!r} is not the key's id")
        try:
            self.public_key.verify(sig, f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(),
                                   hashes.SHA256())
        except InvalidSignature:
            problems.append("assertion signature does not verify with the service account's key")
        now = time.time()
        want = {"iss": self.client_email, "scope": FCM_SCOPE, "aud": self.token_uri}
        for k, v in want.items():
            if claims.get(k) != v:
                problems.append(f"claim {k}={claims.get(k)!r}, want {v!r}")
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or abs(now - iat) > 300:
            problems.append(f"iat {iat!r} is not now")
        if not isinstance(exp, int) or not isinstance(iat, int) or not (now < exp <= iat + 3600):
            problems.append(f"exp {exp!r} is not in (now, iat + 3600]")

    def check_send(self, req: FakeRequest):
        p = req.problems
        want_path = f"/v1/projects/{self.project}/messages:send"
        if req.path != want_path:
            p.append(f"path {req.path!r}, want {want_path!r}")
        auth = req.headers.get("authorization", "")
        tok = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        if tok is None or tok not in self.issued:
            p.append(f"Authorization {auth[:40]!r} is not a token this endpoint issued")
        elif self.issued[tok] < time.time():
            p.append("the access token has expired")
        if req.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            p.append(f"Content-Type {req.headers.get('content-type')!r}")
        body = req.json
        if not isinstance(body, dict) or set(body) != {"message"} or \
                not isinstance(body["message"], dict):
            p.append("body is not {\"message\": {...}}")
            return
        m = body["message"]
        allowed = {"token", "notification", "data", "android", "apns", "webpush", "fcm_options"}
        if set(m) - allowed:
            p.append(f"unknown message fields {sorted(set(m) - allowed)}")
        if not isinstance(m.get("token"), str) or not m["token"]:
            p.append("message.token is not a non-empty string")
        req.token = m.get("token")
        data = m.get("data", {})
        if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in data.items()):
            p.append("message.data is not a map of strings to strings")
        else:
            bad = [k for k in data if k in RESERVED_DATA_KEYS or k.startswith(("google", "gcm"))]
            if bad:
                p.append(f"reserved data keys {bad}")
        n = m.get("notification")
        if n is not None and (not isinstance(n, dict) or set(n) - {"title", "body", "image"}
                              or not all(isinstance(v, str) for v in n.values())):
            p.append(f"message.notification {n!r}")
        a = m.get("android")
        if a is not None:
            if not isinstance(a, dict) or set(a) - {"collapse_key", "priority", "ttl",
                                                    "restricted_package_name", "data",
                                                    "notification", "fcm_options",
                                                    "direct_boot_ok"}:
                p.append(f"message.android {a!r}")
            else:
                if "priority" in a and a["priority"] not in ("NORMAL", "HIGH"):
                    p.append(f"android.priority {a['priority']!r}")
                if "ttl" in a and not (isinstance(a["ttl"], str) and TTL_RE.match(a["ttl"])):
                    p.append(f"android.ttl {a['ttl']!r} is not a Duration string")
                if "collapse_key" in a and not isinstance(a["collapse_key"], str):
                    p.append("android.collapse_key is not a string")
        if isinstance(data, dict):
            if data.get("kind") == "badge":
                if n is not None or (a or {}).get("priority") != "NORMAL":
                    p.append("a badge update must be data-only with NORMAL priority")
            elif n is None or (a or {}).get("priority") != "HIGH":
                p.append("a messages push must have a notification and HIGH priority")

    def close(self):
        self.closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class _ThreadingServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):   # TLS resets etc.: not interesting
        pass


def _fcm_handler(fake: FcmFake):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            pass

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if 0 < length <= 1 << 20 else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            path = self.path
            if path == "/token":
                req = FakeRequest(0, "token", time.monotonic(), path, headers, raw)
                form = urllib.parse.parse_qs(raw.decode("utf-8", "replace"))
                if headers.get("content-type", "").split(";")[0] != \
                        "application/x-www-form-urlencoded":
                    req.problems.append(f"token request Content-Type {headers.get('content-type')!r}")
                fake.check_assertion(form, req.problems)
                fake._record(req)
                if req.problems:
                    self._reply(req, Answer(400, {"error": "invalid_grant"}))
                    return
                tok = "ya29." + secrets.token_urlsafe(32)
                fake.issued[tok] = time.time() + fake.token_lifetime
                self._reply(req, Answer(200, {"access_token": tok, "expires_in": fake.token_lifetime,
                                              "token_type": "Bearer"}))
                return
            req = FakeRequest(0, "send", time.monotonic(), path, headers, raw)
            try:
                req.json = json.loads(raw)
            except ValueError:
                req.json = None
            fake.check_send(req)
            fake._record(req)
            try:
                answer = fake._answer(req)
            except Exception as exc:      # noqa: BLE001 - a broken script answers 599
                req.problems.append(f"script error {exc!r}")
                answer = Answer(599)
            if answer.stall and not self._stall(answer.stall):
                fake._finish(req, None, "client gone")
                self.close_connection = True     # no answer: end the connection at once
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            if answer.status == 200 and answer.body is None:
                answer = Answer(200, {"name": f"projects/{fake.project}/messages/{uuid.uuid4().int}"},
                                answer.headers)
            self._reply(req, answer)

        def _stall(self, seconds: float) -> bool:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                if fake.closing.is_set():
                    return False
                try:
                    readable, _, _ = select.select([self.connection], [], [], 0.05)
                except (OSError, ValueError):
                    return False
                if readable:        # the client sends nothing more before an answer: it left
                    return False
            return True

        def _reply(self, req, answer: Answer):
            body = json.dumps(answer.body if answer.body is not None else {}).encode()
            try:
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(body)))
                for k, v in answer.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()
            except OSError:
                fake._finish(req, None, "client gone")
                return
            fake._finish(req, answer.status, "answered")

    return Handler


# --------------------------------------------------------------------------- APNs

class ApnsFake(_Recorder):
    """APNs on https://127.0.0.1:<port>, HTTP/2 only (ALPN h2)."""

    def __init__(self, pki: dict, directory: Path, topic: str = APNS_TOPIC):
        super().__init__()
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        self.topic = topic
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.public_key = self.key.public_key()
        self.key_file = directory / f"AuthKey_{APNS_KEY_ID}.p8"
        self.key_file.write_bytes(self.key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
        self.key_file.chmod(0o600)
        self.alpn: list = []            # the protocol each connection negotiated
        self._ctx = server_context(pki, ["h2"])
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def env(self) -> dict:
        return {"NATTER_PUSH_APNS_KEY_FILE": str(self.key_file),
                "NATTER_PUSH_APNS_KEY_ID": APNS_KEY_ID, "NATTER_PUSH_APNS_TEAM_ID": APNS_TEAM_ID,
                "NATTER_PUSH_APNS_TOPIC": self.topic, "NATTER_PUSH_APNS_URL": self.base_url}

    def _accept_loop(self):
        while not self.closing.is_set():
            try:
                conn, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, raw_conn: socket.socket):
        import h2.config
        import h2.connection
        import h2.events

        try:
            raw_conn.settimeout(30)
            tls = self._ctx.wrap_socket(raw_conn, server_side=True)
        except (OSError, ssl.SSLError):
            raw_conn.close()
            return
        self.alpn.append(tls.selected_alpn_protocol())
        if tls.selected_alpn_protocol() != "h2":
            tls.close()
            return
        conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        streams: dict[int, dict] = {}
        try:
            tls.sendall(conn.data_to_send())
            tls.settimeout(0.2)
            while not self.closing.is_set():
                try:
                    data = tls.recv(65535)
                except socket.timeout:
                    continue
                if not data:
                    break
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        streams[ev.stream_id] = {"headers": list(ev.headers), "body": b""}
                    elif isinstance(ev, h2.events.DataReceived):
                        streams.setdefault(ev.stream_id, {"headers": [], "body": b""})
                        streams[ev.stream_id]["body"] += ev.data
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        st = streams.pop(ev.stream_id, None)
                        if st is not None:
                            self._respond(conn, ev.stream_id, st)
                    elif isinstance(ev, h2.events.ConnectionTerminated):
                        tls.sendall(conn.data_to_send())
                        return
                tls.sendall(conn.data_to_send())
        except (OSError, ssl.SSLError, Exception):     # noqa: BLE001 - a broken peer ends the connection
            pass
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def _respond(self, conn, stream_id: int, st: dict):
        pseudo = {k: v for k, v in st["headers"] if k.startswith(":")}
        headers = {k.lower(): v for k, v in st["headers"] if not k.startswith(":")}
        req = FakeRequest(0, "send", time.monotonic(), pseudo.get(":path", ""), headers, st["body"])
        req.headers.update(pseudo)
        try:
            req.json = json.loads(st["body"])
        except ValueError:
            req.json = None
        self.check(req, pseudo)
        self._record(req)
        try:
            answer = self._answer(req)
        except Exception as exc:          # noqa: BLE001
            req.problems.append(f"script error {exc!r}")
            answer = Answer(500, {"reason": "InternalServerError"})
        body = b"" if answer.status == 200 else json.dumps(answer.body or {}).encode()
        out = [(":status", str(answer.status)), ("apns-id", str(uuid.uuid4()).upper())]
        if body:
            out += [("content-type", "application/json"), ("content-length", str(len(body)))]
        out += [(k.lower(), v) for k, v in answer.headers.items()]
        conn.send_headers(stream_id, out, end_stream=not body)
        if body:
            conn.send_data(stream_id, body, end_stream=True)
        self._finish(req, answer.status, "answered")

    def check(self, req: FakeRequest, pseudo: dict):
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

        p, h = req.problems, req.headers
        if pseudo.get(":method") != "POST" or pseudo.get(":scheme") != "https":
            p.append(f":method {pseudo.get(':method')!r} :scheme {pseudo.get(':scheme')!r}")
        m = re.match(r"^/3/device/([0-9a-fA-F]+)$", pseudo.get(":path", ""))
        if not m:
            p.append(f":path {pseudo.get(':path')!r} is not /3/device/<hex token>")
        req.token = m.group(1) if m else None
        auth = h.get("authorization", "")
        jwt = auth[len("bearer "):] if auth.startswith("bearer ") else ""
        parts = jwt.split(".")
        if len(parts) != 3:
            p.append(f"authorization {auth[:40]!r} is not 'bearer <JWT>'")
        else:
            try:
                header, claims = json.loads(b64url_decode(parts[0])), json.loads(b64url_decode(parts[1]))
                sig = b64url_decode(parts[2])
            except ValueError as exc:
                p.append(f"provider token does not decode: {exc}")
                header, claims, sig = {}, {}, b""
            if header.get("alg") != "ES256" or header.get("kid") != APNS_KEY_ID:
                p.append(f"provider token header {header}")
            if claims.get("iss") != APNS_TEAM_ID:
                p.append(f"provider token iss {claims.get('iss')!r}")
            iat = claims.get("iat")
            if not isinstance(iat, int) or not (time.time() - 3600 < iat <= time.time() + 60):
                p.append(f"provider token iat {iat!r} is not within the last hour")
            if len(sig) != 64:
                p.append(f"ES256 signature is {len(sig)} bytes, not the 64 of r||s")
            else:
                der = encode_dss_signature(int.from_bytes(sig[:32], "big"),
                                           int.from_bytes(sig[32:], "big"))
                try:
                    self.public_key.verify(der, f"{parts[0]}.{parts[1]}".encode(),
                                           ec.ECDSA(hashes.SHA256()))
                except InvalidSignature:
                    p.append("provider token signature does not verify with the key")
        if h.get("apns-topic") != self.topic:
            p.append(f"apns-topic {h.get('apns-topic')!r}")
        ptype = h.get("apns-push-type")
        if ptype not in ("alert", "background"):
            p.append(f"apns-push-type {ptype!r}")
        prio = h.get("apns-priority")
        if prio not in ("5", "10") or (ptype == "background" and prio != "5"):
            p.append(f"apns-priority {prio!r} for push type {ptype!r}")
        exp = h.get("apns-expiration", "")
        if not exp.isdigit() or (exp != "0" and int(exp) < time.time() - 5):
            p.append(f"apns-expiration {exp!r} is not a future unix time")
        cid = h.get("apns-collapse-id")
        if cid is not None and len(cid.encode()) > 64:
            p.append("apns-collapse-id is longer than 64 bytes")
        if len(req.raw) > 4096:
            p.append(f"payload is {len(req.raw)} bytes (at most 4096)")
        aps = req.json.get("aps") if isinstance(req.json, dict) else None
        if not isinstance(aps, dict):
            p.append("payload has no aps dictionary")
        elif ptype == "background":
            if aps.get("content-available") != 1 or "alert" in aps or "sound" in aps:
                p.append(f"a background push's aps must be content-available only: {aps}")
        elif ptype == "alert" and not isinstance(aps.get("alert"), (dict, str)):
            p.append(f"an alert push without aps.alert: {aps}")
        if isinstance(aps, dict) and "badge" in aps and not isinstance(aps["badge"], int):
            p.append("aps.badge is not a number")

    def close(self):
        self.closing.set()
        try:
            self._sock.close()
        except OSError:
            pass
        self._thread.join(5)
        for t in self._threads:
            t.join(5)


# --------------------------------------------------------------------------- the stack

class ProviderStack(PushStack):
    """A PushStack (natter-api, natter-worker, webhook receiver) whose worker also talks to
    an FcmFake and an ApnsFake over TLS (NATTER_PUSH_CA_FILE = the test CA). The fakes are
    released before the processes stop (a stalled request ends at once) and closed after."""

    def __init__(self, directory: Path, fcm_script=None, apns_script=None, **kw):
        directory.mkdir(parents=True, exist_ok=True)
        self.pki = make_pki(directory / "pki")
        self.fcm = FcmFake(self.pki, directory)
        self.apns = ApnsFake(self.pki, directory)
        if fcm_script:
            self.fcm.script = fcm_script
        if apns_script:
            self.apns.script = apns_script
        env = {"NATTER_PUSH_CA_FILE": str(self.pki["ca"]), **self.fcm.env(), **self.apns.env()}
        env.update(kw.pop("worker_env", {}))
        try:
            super().__init__(**kw, **env)
        except BaseException:
            self.fcm.close()
            self.apns.close()
            raise

    def close(self):
        self.fcm.closing.set()
        self.apns.closing.set()
        try:
            super().close()
        finally:
            self.fcm.close()
            self.apns.close()


@pytest.fixture
def provider_stack(migrated, tmp_path):
    """provider_stack(fcm_script=None, apns_script=None, workers=1, threads=2,
    worker_env={...}) -> ProviderStack; closed at teardown."""
    stacks: list[ProviderStack] = []

    def make(**kw) -> ProviderStack:
        s = ProviderStack(tmp_path / f"stack{len(stacks)}", **kw)
        stacks.append(s)
        return s
    yield make
    errors = []
    for s in reversed(stacks):
        try:
            s.close()
        except BaseException as exc:      # noqa: BLE001 - report every stack
            errors.append(str(exc))
    if errors:
        pytest.fail("\n\n".join(errors), pytrace=False)
