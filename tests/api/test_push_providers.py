"""FCM and APNs push providers (docs/CONTRACT.md, issue 14 item 2).

Each test runs natter-api + natter-worker (pushlib's stack) whose worker talks to fake FCM
and APNs servers (providerlib) over real TLS with a CA made for the test: FCM HTTP v1 with
the OAuth 2.0 service-account flow over HTTPS, APNs over HTTP/2 (TLS, ALPN h2) with an
ES256 provider token. The fakes check every header, the JWTs' signatures and claims and the
bodies against the providers' published formats (`problems` must stay empty) and answer
each documented error under test control, so the delivery, retry (with Retry-After),
token-removal and failure paths all run. Devices are told apart by their push tokens."""
import json
import time

import requests

from chatlib import make_direct, send
from natterlib import assert_problem, metric_samples, new_account, wait_for
from pushlib import (QUIET, push_account, push_token_db, set_push_token)
from providerlib import (Answer, apns_error, fcm_error, new_apns_token, new_fcm_token,
                         provider_stack)  # noqa: F401

WAIT = 20.0   # bound of "a push arrives" waits on a loaded machine (ASan included)


def device_with(client, prefix, provider, token, platform="android"):
    """A user logged in on one device whose push token is `token` at `provider`: the
    Account (its token and device_id are that device's)."""
    acct = new_account(client, devices=0, prefix=prefix)
    s = acct.login(client, device_name="phone", platform=platform)
    set_push_token(client, s["access_token"], s["device_id"], token, provider=provider)
    return acct


def no_problems(fake):
    probs = fake.problems()
    assert not probs, f"{type(fake).__name__} found malformed requests:\n" + "\n".join(probs)


def pushes_total(stack) -> dict:
    return {k: v for k, v in metric_samples(stack.metrics()).items()
            if k.startswith("natter_pushes_total{")}


def wait_total(stack, provider: str, outcome: str, at_least: int) -> dict:
    """Wait until natter_pushes_total{provider, outcome} reaches at_least (the worker counts
    right after the provider answered); the totals."""
    key = f'natter_pushes_total{{provider="{provider}",outcome="{outcome}"}}'
    return wait_for(lambda: (lambda t: t if t.get(key, 0) >= at_least else None)(pushes_total(stack)),
                    WAIT, f"{key} >= {at_least}")


# --------------------------------------------------------------------------- FCM

def test_fcm_push_is_authorised_and_well_formed(provider_stack):
    """A burst of 3 messages to an FCM device makes one token request (an RS256 assertion
    the fake verifies with the service account's public key; iss, scope, aud, iat, exp,
    kid) and one messages:send with that bearer token: message.token, a notification,
    data (strings: push_id, kind messages, chat_id, seq, count 3, badge 3), android
    collapse_key, ttl as a Duration and HIGH priority. A second burst reuses the cached
    access token (still one token request). /metrics counts them as
    natter_pushes_total{provider="fcm",outcome="sent"}."""
    stack = provider_stack()
    c = stack.client
    tok = new_fcm_token()
    a = new_account(c, prefix="fa")
    b = device_with(c, "fb", "fcm", tok)
    chat = make_direct(c, a.token, b.id)
    last = None
    for i in range(3):
        last = send(c, a.token, chat["id"], f"fcm {i}")
    first = stack.fcm.wait_sends(1, WAIT, token=tok, status=200)[0]
    no_problems(stack.fcm)
    m = first.json["message"]
    assert m["data"]["kind"] == "messages" and m["data"]["count"] == "3", first.summary()
    assert m["data"]["badge"] == "3" and m["data"]["seq"] == str(last["seq"]), first.summary()
    assert m["data"]["chat_id"] == str(chat["id"]), first.summary()
    assert m["data"]["push_id"].endswith(f"-{b.device_id}"), first.summary()
    assert m["notification"]["body"] == "3 new messages", first.summary()
    assert m["android"]["priority"] == "HIGH" and m["android"]["collapse_key"], first.summary()
    ttl = float(m["android"]["ttl"][:-1])
    assert 0 < ttl <= 3600, first.summary()

    send(c, a.token, chat["id"], "again")
    stack.fcm.wait_sends(2, WAIT, token=tok, status=200)
    no_problems(stack.fcm)
    assert len(stack.fcm.token_requests()) == 1, \
        f"the access token was not reused:\n{stack.fcm.dump()}"
    wait_total(stack, "fcm", "sent", 2)


def test_fcm_errors_remove_tokens_or_retry(provider_stack):
    """Five FCM devices, each answered by the fake as FCM documents: UNREGISTERED (404) and
    INVALID_ARGUMENT about message.token (400) remove the device's token at once (one
    request each); 429 with Retry-After: 2 is retried no sooner than that (the retry base
    is 100 ms) and then delivered; 503 is retried and delivered; 401 makes the worker fetch
    a new access token and deliver. A 400 about something else is permanent: one request,
    a dead letter, the token kept."""
    toks = {k: new_fcm_token() for k in ("gone", "invalid", "quota", "down", "auth", "bad")}
    stack = provider_stack()
    stack.fcm.per_token({
        toks["gone"]: [fcm_error(404, "NOT_FOUND", "UNREGISTERED")],
        toks["invalid"]: [fcm_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", token_field=True)],
        toks["quota"]: [fcm_error(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", retry_after=2),
                        Answer()],
        toks["down"]: [fcm_error(503, "UNAVAILABLE", "UNAVAILABLE"), Answer()],
        toks["auth"]: [fcm_error(401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR"), Answer()],
        toks["bad"]: [fcm_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT")],
    })
    c = stack.client
    a = new_account(c, prefix="fe")
    users = {k: device_with(c, f"f{k[:2]}", "fcm", t) for k, t in toks.items()}
    for u in users.values():
        chat = make_direct(c, a.token, u.id)
        send(c, a.token, chat["id"], "hello")

    for k in ("quota", "down", "auth"):
        stack.fcm.wait_sends(1, WAIT, token=toks[k], status=200)
    for k in ("gone", "invalid", "bad"):
        stack.fcm.wait_sends(1, WAIT, token=toks[k])
    time.sleep(QUIET)
    no_problems(stack.fcm)
    dump = stack.fcm.dump()
    for k in ("gone", "invalid"):
        assert len(stack.fcm.sends(toks[k])) == 1, dump
        assert push_token_db(users[k].device_id) == "", f"{k}: token not removed\n{dump}"
    assert push_token_db(users["bad"].device_id) == toks["bad"], dump
    assert len(stack.fcm.sends(toks["bad"])) == 1, dump
    dead = [json.loads(e["job"]) for _, e in stack.dead_letters()]
    assert any(j.get("device_id") == users["bad"].device_id for j in dead), dead
    q = stack.fcm.sends(toks["quota"])
    assert q[1].arrived - q[0].arrived >= 1.8, f"Retry-After: 2 was not honoured:\n{dump}"
    assert len(stack.fcm.token_requests()) == 2, f"401 did not renew the access token:\n{dump}"
    wait_total(stack, "fcm", "token_removed", 2)
    wait_total(stack, "fcm", "retried", 3)
    wait_total(stack, "fcm", "failed", 1)


# --------------------------------------------------------------------------- APNs

def test_apns_push_over_http2_with_provider_token(provider_stack):
    """An APNs device gets its push over HTTP/2 (ALPN h2 on TLS): POST /3/device/<token>,
    `authorization: bearer` an ES256 JWT (kid, iss = team id, iat; the r||s signature
    verifies with the key), apns-topic, apns-push-type alert, apns-priority 10,
    apns-expiration in the future, apns-collapse-id, and {"aps": {"alert", "badge": 2,
    "sound"}, "natter": {push_id, kind, chat_id, seq, count 2}}. A second push reuses the
    same provider token."""
    stack = provider_stack()
    c = stack.client
    tok = new_apns_token()
    a = new_account(c, prefix="aa")
    b = device_with(c, "ab", "apns", tok, platform="ios")
    chat = make_direct(c, a.token, b.id)
    send(c, a.token, chat["id"], "one")
    last = send(c, a.token, chat["id"], "two")
    first = stack.apns.wait_sends(1, WAIT, token=tok, status=200)[0]
    no_problems(stack.apns)
    assert stack.apns.alpn and set(stack.apns.alpn) == {"h2"}, stack.apns.alpn
    h, body = first.headers, first.json
    assert (h["apns-push-type"], h["apns-priority"], h["apns-topic"]) == \
        ("alert", "10", "org.natter.app"), first.summary()
    assert int(h["apns-expiration"]) > time.time(), first.summary()
    assert body["aps"]["badge"] == 2 and body["aps"]["alert"]["body"] == "2 new messages", \
        first.summary()
    n = body["natter"]
    assert (n["kind"], n["count"], n["chat_id"], n["seq"]) == \
        ("messages", 2, chat["id"], last["seq"]), first.summary()
    assert n["push_id"].endswith(f"-{b.device_id}"), first.summary()

    send(c, a.token, chat["id"], "three")
    second = stack.apns.wait_sends(2, WAIT, token=tok, status=200)[1]
    no_problems(stack.apns)
    assert second.headers["authorization"] == first.headers["authorization"], \
        "the provider token was not reused"


def test_apns_errors_remove_tokens_or_retry(provider_stack):
    """APNs answers as documented: 410 Unregistered and 400 BadDeviceToken remove the
    device's token (one request each); 429 TooManyRequests and 500 InternalServerError
    are retried and then delivered; 400 PayloadEmpty-like errors are permanent (token
    kept)."""
    toks = {k: new_apns_token() for k in ("gone", "baddev", "busy", "down", "bad")}
    stack = provider_stack()
    stack.apns.per_token({
        toks["gone"]: [apns_error(410, "Unregistered")],
        toks["baddev"]: [apns_error(400, "BadDeviceToken")],
        toks["busy"]: [apns_error(429, "TooManyRequests"), Answer()],
        toks["down"]: [apns_error(500, "InternalServerError"), Answer()],
        toks["bad"]: [apns_error(400, "BadTopic")],
    })
    c = stack.client
    a = new_account(c, prefix="ae")
    users = {k: device_with(c, f"a{k[:2]}", "apns", t, platform="ios") for k, t in toks.items()}
    for u in users.values():
        chat = make_direct(c, a.token, u.id)
        send(c, a.token, chat["id"], "hello")
    for k in ("busy", "down"):
        stack.apns.wait_sends(1, WAIT, token=toks[k], status=200)
    for k in ("gone", "baddev", "bad"):
        stack.apns.wait_sends(1, WAIT, token=toks[k])
    time.sleep(QUIET)
    no_problems(stack.apns)
    dump = stack.apns.dump()
    for k in ("gone", "baddev"):
        assert len(stack.apns.sends(toks[k])) == 1, dump
        assert push_token_db(users[k].device_id) == "", f"{k}: token not removed\n{dump}"
    assert len(stack.apns.sends(toks["bad"])) == 1, dump
    assert push_token_db(users["bad"].device_id) == toks["bad"], dump
    wait_total(stack, "apns", "token_removed", 2)
    wait_total(stack, "apns", "sent", 2)


def test_apns_token_must_be_hex(provider_stack):
    """PUT /v1/devices/{id}/push with provider apns and a token that is not hex is 422
    validation_failed (field token) and changes nothing; fcm and apns are accepted
    providers."""
    stack = provider_stack()
    c = stack.client
    acct = new_account(c, devices=0, prefix="ah")
    s = acct.login(c, device_name="phone", platform="ios")
    r = c.put(f"/v1/devices/{s['device_id']}/push", json={"provider": "apns", "token": "not hex!"},
              token=s["access_token"])
    assert_problem(r, 422, "validation_failed", field="token")
    assert push_token_db(s["device_id"]) == ""
    set_push_token(c, s["access_token"], s["device_id"], new_apns_token(), provider="apns")
    set_push_token(c, s["access_token"], s["device_id"], new_fcm_token(), provider="fcm")


# --------------------------------------------------------------------------- isolation

def test_one_provider_outage_does_not_delay_another(provider_stack):
    """FCM hangs (every messages:send stalls 40 s; the push timeout is 30 s) while three
    FCM users get messages; a webhook user and an APNs user messaged after them still get
    their pushes within 15 s, because each provider has its own concurrency budget (2
    threads: 1 call per provider at once) and a push whose provider's budget is taken is
    deferred instead of holding a thread. /metrics shows the deferred FCM pushes (natter-api's
    and the worker's own)."""
    stack = provider_stack(threads=2, worker_env={"NATTER_PUSH_TIMEOUT_MS": "30000"})
    stack.fcm.script = lambda req: Answer(stall=40)
    c = stack.client
    a = new_account(c, prefix="oa")
    fcm_users = [device_with(c, f"of{i}", "fcm", new_fcm_token()) for i in range(3)]
    for u in fcm_users:
        send(c, a.token, make_direct(c, a.token, u.id)["id"], "to fcm")
    stack.fcm.wait_until(lambda recs: [r for r in recs if r.kind == "send"] or None, WAIT,
                         "the first (stalling) FCM send")
    hook_user, (hook_tok,) = push_account(c, prefix="ow")
    apns_tok = new_apns_token()
    apns_user = device_with(c, "oi", "apns", apns_tok, platform="ios")
    start = time.monotonic()
    send(c, a.token, make_direct(c, a.token, hook_user.id)["id"], "to webhook")
    send(c, a.token, make_direct(c, a.token, apns_user.id)["id"], "to apns")
    stack.hook.wait_count(1, timeout=15, tokens=hook_tok, delivered=True)
    stack.apns.wait_sends(1, 15, token=apns_tok, status=200)
    assert time.monotonic() - start < 15
    still = [r for r in stack.fcm.sends() if r.outcome == "pending"]
    assert still, f"FCM was not hanging meanwhile:\n{stack.fcm.dump()}"
    no_problems(stack.apns)
    wait_total(stack, "fcm", "deferred", 1)
    # the worker's own /metrics (this process's counts) shows the deferrals too
    own = metric_samples(requests.get(stack.workers[0].base_url + "/metrics", timeout=10).text)
    assert own.get('natter_pushes_total{provider="fcm",outcome="deferred"}', 0) >= 1, own


def test_worker_refuses_unusable_provider_keys(provider_stack, tmp_path):
    """natter-worker does not start when NATTER_PUSH_APNS_KEY_FILE or
    NATTER_PUSH_FCM_CREDENTIALS is unreadable or not a key: it exits 1 naming the
    setting, and never prints key material."""
    from natterlib import run_binary
    from natterlib.env import common_env, new_state_dir
    bad = tmp_path / "bad.p8"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    for env in ({"NATTER_PUSH_APNS_KEY_FILE": str(bad), "NATTER_PUSH_APNS_KEY_ID": "K",
                 "NATTER_PUSH_APNS_TEAM_ID": "T", "NATTER_PUSH_APNS_TOPIC": "x"},
                {"NATTER_PUSH_FCM_CREDENTIALS": str(tmp_path / "missing.json")},
                {"NATTER_PUSH_FCM_CREDENTIALS": str(bad)}):
        e = common_env(new_state_dir("worker"), **env)
        proc = run_binary("natter-worker", env=e, timeout=20)
        assert proc.returncode == 1, proc.output
        name = next(iter(env))
        assert name in proc.output, proc.output
        assert "not a key" not in proc.output, proc.output
