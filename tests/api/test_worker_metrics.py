"""natter-worker's operator listener (docs/CONTRACT.md "natter-worker's operator
listener", issue 14: "the worker's /metrics show pushes per provider and outcome").

Each worker the tests start listens on a free port of 127.0.0.1 (NATTER_WORKER_LISTEN, set
by natterlib's Launcher; the worker's ServerProcess .base_url). Its /metrics counts what
THIS process did since it started, in memory; natter-api's /metrics shows the same family
for the whole pool from Redis. The pushes go through the fake FCM and APNs servers of
providerlib and the webhook receiver of pushlib, scripted per device token so that each
provider gets every outcome the other push tests produce (sent, retried, token_removed,
failed) a known number of times."""
import math
import re
import shutil
import socket
import subprocess
import time

import requests

from chatlib import make_direct, send
from natterlib import metric_samples, new_account, run_binary, wait_for
from natterlib.env import common_env, new_state_dir
from providerlib import (Answer, apns_error, fcm_error, new_apns_token, new_fcm_token,
                         provider_stack)  # noqa: F401
from pushlib import QUIET, Reply, new_push_token, push_stack, set_push_token  # noqa: F401

WAIT = 30.0      # bound of the waits for counts and state changes (loaded machine, ASan)
HTTP = 10        # seconds, one request to the listener

PROVIDERS = ("webhook", "log", "fcm", "apns")
OUTCOMES = ("sent", "retried", "token_removed", "failed", "deferred", "expired")

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
SAMPLE_RE = re.compile(rf"^({_NAME})(?:\{{({_LABEL}(?:,{_LABEL})*)\}})? (\S+)$")
HELP_RE = re.compile(rf"^# HELP ({_NAME}) \S.*$")
TYPE_RE = re.compile(rf"^# TYPE ({_NAME}) (counter|gauge|histogram|summary|untyped)$")


def parse_strict(text: str) -> dict:
    """Prometheus text format 0.0.4, strictly: the page ends with a newline, every line is
    `# HELP name text`, `# TYPE name type` or `name{labels} value` (a float), every sample
    belongs to a family declared by # TYPE (and # HELP) before it, no family is declared
    twice and no sample appears twice. Returns {(name, ((label, value), ...)): value}."""
    assert text.endswith("\n"), "the page does not end with a newline"
    types, helps, samples = {}, set(), {}
    for n, line in enumerate(text[:-1].split("\n"), 1):
        m = HELP_RE.match(line)
        if m:
            assert m.group(1) not in helps, f"line {n}: second # HELP for {m.group(1)}"
            helps.add(m.group(1))
            continue
        m = TYPE_RE.match(line)
        if m:
            assert m.group(1) not in types, f"line {n}: second # TYPE for {m.group(1)}"
            types[m.group(1)] = m.group(2)
            continue
        m = SAMPLE_RE.match(line)
        assert m, f"line {n} is neither a comment nor a sample: {line!r}"
        name, labels, value = m.group(1), m.group(2), m.group(3)
        assert name in types and name in helps, f"line {n}: {name} has no # TYPE/# HELP before it"
        v = float(value)
        assert not math.isnan(v), f"line {n}: NaN"
        if types[name] == "counter":
            assert v >= 0 and v == int(v), f"line {n}: counter {name} = {value}"
        pairs = tuple(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"', labels or ""))
        key = (name, pairs)
        assert key not in samples, f"line {n}: duplicate sample {line!r}"
        samples[key] = v
    return samples


def get(w, path, method="GET", **kw):
    return requests.request(method, w.base_url + path, timeout=HTTP, **kw)


def worker_metrics(w) -> dict:
    r = get(w, "/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse_strict(r.text)


def pushes(samples: dict) -> dict:
    """{(provider, outcome): count} of natter_pushes_total (every pair present)."""
    out = {}
    for (name, labels), v in samples.items():
        if name == "natter_pushes_total":
            d = dict(labels)
            assert set(d) == {"provider", "outcome"}, labels
            out[(d["provider"], d["outcome"])] = v
    return out


def job_runs(samples: dict) -> dict:
    return {(dict(labels)["type"], dict(labels)["outcome"]): v
            for (name, labels), v in samples.items() if name == "natter_worker_job_runs_total"}


def gauge(samples: dict, name: str, **labels) -> float:
    return samples[(name, tuple(labels.items()))]


def assert_problem_json(r, status, code):
    assert r.status_code == status, f"{r.status_code} {r.text}"
    assert r.headers["Content-Type"] == "application/problem+json", r.headers
    body = r.json()
    assert body["code"] == code and body["status"] == status, body
    assert body["type"] == f"urn:natter:problem:{code}", body
    assert body["title"] and body["detail"], body
    assert body["request_id"] == r.headers["X-Request-Id"], (body, r.headers)
    return body


def test_worker_metrics_count_pushes_per_provider_and_outcome(provider_stack):
    """Four devices at each of the webhook, FCM and APNs: one accepts at once, one says the
    token is gone (webhook 410, FCM 404 UNREGISTERED, APNs 410 Unregistered), one fails
    once (500 / 503 / 500) and then accepts, one refuses for good (400 / 400
    INVALID_ARGUMENT / 400 BadTopic). The worker's /metrics (strict Prometheus text, and
    promtool's check) then shows exactly sent 2, retried 1, token_removed 1, failed 1 for
    each of the three, and 0 for every other provider and outcome (deferral cannot happen:
    the provider budget equals the threads); natter-api's pool-wide family agrees (one
    worker). Its job figures show the three retried pushes run as push_send jobs, and
    nothing is left running or in flight."""
    plans = {}      # webhook token -> statuses, in order (the last repeats)

    def hook_script(req, hook):
        plan = plans.get(req.token, [200])
        n = sum(1 for r in hook.requests() if r.token == req.token and r.index < req.index)
        return Reply(plan[min(n, len(plan) - 1)])

    stack = provider_stack(script=hook_script, threads=2,
                           worker_env={"NATTER_PUSH_PROVIDER_CONCURRENCY": "2"})
    w = stack.workers[0]
    before = pushes(worker_metrics(w))
    assert set(before) == {(p, o) for p in PROVIDERS for o in OUTCOMES}, sorted(before)
    assert all(v == 0 for v in before.values()), before

    fcm = {k: new_fcm_token() for k in ("ok", "gone", "down", "bad")}
    apns = {k: new_apns_token() for k in ("ok", "gone", "down", "bad")}
    stack.fcm.per_token({fcm["ok"]: [Answer()],
                         fcm["gone"]: [fcm_error(404, "NOT_FOUND", "UNREGISTERED")],
                         fcm["down"]: [fcm_error(503, "UNAVAILABLE", "UNAVAILABLE"), Answer()],
                         fcm["bad"]: [fcm_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT")]})
    stack.apns.per_token({apns["ok"]: [Answer()],
                          apns["gone"]: [apns_error(410, "Unregistered")],
                          apns["down"]: [apns_error(500, "InternalServerError"), Answer()],
                          apns["bad"]: [apns_error(400, "BadTopic")]})
    hook = {k: new_push_token() for k in ("ok", "gone", "down", "bad")}
    plans.update({hook["ok"]: [200], hook["gone"]: [410], hook["down"]: [500, 200],
                  hook["bad"]: [400]})

    c = stack.client
    sender = new_account(c, prefix="wm")
    for provider, toks, platform in (("fcm", fcm, "android"), ("apns", apns, "ios"),
                                     ("webhook", hook, "ios")):
        for k, tok in toks.items():
            acct = new_account(c, devices=0, prefix=f"w{provider[0]}{k[0]}")
            s = acct.login(c, device_name="phone", platform=platform)
            set_push_token(c, s["access_token"], s["device_id"], tok, provider=provider)
            send(c, sender.token, make_direct(c, sender.token, acct.id)["id"], f"{provider} {k}")

    per_provider = {"sent": 2, "retried": 1, "token_removed": 1, "failed": 1}
    expected = {(p, o): (per_provider.get(o, 0) if p != "log" else 0)
                for p in PROVIDERS for o in OUTCOMES}
    wait_for(lambda: pushes(worker_metrics(w)) == expected, WAIT,
             f"the worker's natter_pushes_total to reach {expected}")
    time.sleep(QUIET)     # nothing more comes: the counts stay exact
    samples = worker_metrics(w)
    assert pushes(samples) == expected
    api = {k: v for k, v in metric_samples(stack.metrics()).items()
           if k.startswith("natter_pushes_total{")}
    for (p, o), v in expected.items():
        key = f'natter_pushes_total{{provider="{p}",outcome="{o}"}}'
        assert api.get(key, 0) == v, f"natter-api's {key} = {api.get(key)}, worker's {v}"

    runs = job_runs(samples)
    assert runs[("push_send", "done")] == 3, runs       # the three second attempts
    assert runs[("push_flush", "done")] >= 12, runs     # one flush per recipient
    assert runs[("push_message", "done")] >= 12, runs
    assert runs[("invalid", "dead")] == 0, runs
    assert gauge(samples, "natter_worker_threads") == 2
    assert gauge(samples, "natter_worker_jobs_running") in (0, 1, 2)
    for p in PROVIDERS:
        assert gauge(samples, "natter_push_provider_calls_in_flight", provider=p) == 0
    assert 0 < time.time() - gauge(samples, "natter_worker_start_time_seconds") < 3600

    promtool = shutil.which("promtool")
    assert promtool, "promtool not found (`make test` installs Debian's prometheus package)"
    proc = subprocess.run([promtool, "check", "metrics"], input=get(w, "/metrics").text,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), \
        f"promtool check metrics:\n{proc.stdout}\n{proc.stderr}"


def test_worker_health_readiness_and_errors(push_stack):
    """GET /healthz is 200 {"status":"ok"}; GET /readyz is 200 with both checks ok, and
    503 problem+json not_ready (Retry-After, checks.redis fail, postgres ok) while the
    worker's Redis is down — /healthz and /metrics still answer — then 200 again when Redis
    is back. HEAD answers without a body; an unknown path is 404 not_found, another method
    405 method_not_allowed with `Allow: GET, HEAD`.
    SIGTERM stops the listener before the worker stops, and the process exits 0 (clean
    under the sanitizers)."""
    stack = push_stack(threads=1)
    w = stack.workers[0]
    r = get(w, "/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}, r.text
    assert r.headers["Content-Type"] == "application/json"
    assert re.fullmatch(r"[0-9a-f]{16}", r.headers["X-Request-Id"]), r.headers
    r = get(w, "/readyz")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ready", "checks": {"postgres": "ok", "redis": "ok"}}

    r = get(w, "/metrics", method="HEAD")
    assert r.status_code == 200 and r.content == b"", r.content[:200]
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")

    body = assert_problem_json(get(w, "/v1/chats"), 404, "not_found")
    assert body.get("instance") == "/v1/chats", body
    assert_problem_json(get(w, "/metrics/"), 404, "not_found")
    for method, path in (("POST", "/metrics"), ("DELETE", "/healthz"), ("PUT", "/readyz")):
        r = get(w, path, method=method, data=b"{}")
        assert_problem_json(r, 405, "method_not_allowed")
        assert r.headers["Allow"] == "GET, HEAD", r.headers

    stack.redis.stop()
    try:
        def not_ready():
            r = get(w, "/readyz")
            return [r] if r.status_code == 503 else None    # a 503 Response is falsy
        (r,) = wait_for(not_ready, WAIT, "the worker's /readyz to answer 503 with Redis down", 0.2)
        body = assert_problem_json(r, 503, "not_ready")
        assert body["checks"] == {"postgres": "ok", "redis": "fail"}, body
        assert r.headers["Retry-After"].isdigit(), r.headers
        assert get(w, "/healthz").status_code == 200
        assert get(w, "/metrics").status_code == 200
    finally:
        stack.redis.start()
    wait_for(lambda: get(w, "/readyz").status_code == 200, WAIT,
             "the worker's /readyz to answer 200 once Redis is back", 0.2)

    w.stop()
    w.assert_clean_exit()
    msgs = [o.get("msg") for o in w.log_json()]
    assert "operator listener stopped" in msgs and "worker stopped" in msgs, msgs
    assert msgs.index("operator listener stopped") < msgs.index("worker stopped"), msgs
    try:
        socket.create_connection(("127.0.0.1", w.port), timeout=2).close()
        listening = True
    except OSError:
        listening = False
    assert not listening, "the port still accepts connections after the worker stopped"


def test_worker_listen_setting(worker, tmp_path):
    """NATTER_WORKER_LISTEN: a value that is not address:port (with an IPv6 address in
    brackets) or a port outside 1..65535 makes natter-worker exit 1 naming the setting; a
    port already taken does too (no silent second listener); empty disables the listener
    and the worker runs without it; an IPv6 loopback address in brackets works."""
    for bad in ("8081", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", "localhost:8081",
                "::1:8081", "[::1]8081", "127.0.0.1:80x"):
        env = common_env(new_state_dir("worker"), NATTER_WORKER_LISTEN=bad)
        proc = run_binary("natter-worker", env=env, timeout=20)
        assert proc.returncode == 1, f"{bad!r}: exit {proc.returncode}\n{proc.output}"
        assert "NATTER_WORKER_LISTEN" in proc.output, proc.output

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        env = common_env(new_state_dir("worker"), NATTER_WORKER_LISTEN=f"127.0.0.1:{port}")
        proc = run_binary("natter-worker", env=env, timeout=20)
        assert proc.returncode == 1, proc.output
        assert "NATTER_WORKER_LISTEN" in proc.output, proc.output

    w = worker(threads=1, NATTER_WORKER_LISTEN="")
    assert any(o.get("msg", "").startswith("operator listener disabled") for o in w.log_json())

    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s6:
            s6.bind(("::1", 0))
            port6 = s6.getsockname()[1]
    except OSError:
        return      # no IPv6 loopback on this machine
    w6 = worker(threads=1, NATTER_WORKER_LISTEN=f"[::1]:{port6}")
    r = requests.get(f"http://[::1]:{port6}/healthz", timeout=HTTP)
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert w6.running()


def test_worker_metrics_token(worker):
    """NATTER_METRICS_TOKEN guards the worker's /metrics as natter-api's: no Authorization
    (or not Bearer) → 401 unauthorized with `WWW-Authenticate: Bearer realm="metrics"`;
    another token, one byte longer or shorter → 401 invalid_token; the token → 200 and the
    metrics. /healthz and /readyz need none. A token under 16 bytes stops natter-worker at
    start, naming the setting."""
    token = "worker-metrics-token-0123456789"
    w = worker(threads=1, NATTER_METRICS_TOKEN=token)
    for headers in ({}, {"Authorization": token}, {"Authorization": "Basic " + token},
                    {"Authorization": "Bearer "}):
        r = get(w, "/metrics", headers=headers)
        assert_problem_json(r, 401, "unauthorized")
        assert r.headers["WWW-Authenticate"] == 'Bearer realm="metrics"', r.headers
        assert "natter_pushes_total" not in r.text
    for wrong in (token[:-1], token + "x", "x" * len(token)):
        r = get(w, "/metrics", headers={"Authorization": "Bearer " + wrong})
        assert_problem_json(r, 401, "invalid_token")
        assert 'error="invalid_token"' in r.headers["WWW-Authenticate"], r.headers
    r = get(w, "/metrics", headers={"Authorization": "Bearer " + token})
    assert r.status_code == 200, r.text
    assert ("natter_worker_threads", ()) in parse_strict(r.text)
    assert get(w, "/healthz").status_code == 200
    assert get(w, "/readyz").status_code == 200

    env = common_env(new_state_dir("worker"), NATTER_METRICS_TOKEN="short")
    proc = run_binary("natter-worker", env=env, timeout=20)
    assert proc.returncode == 1, proc.output
    assert "NATTER_METRICS_TOKEN" in proc.output, proc.output
