"""Ops surface: /healthz, /readyz, /metrics, /openapi.yaml, request ids, routing errors,
the command line (--routes, --help) and the JSON log format."""
import re
import secrets
import shutil
import subprocess

import yaml
from jsonschema import Draft202012Validator

from natterlib import (SPEC_PATH, Client, assert_problem, assert_status, contract_env_vars,
                       media_type, new_account, normalize_template, parse_json_log,
                       run_binary)

METRIC_LINE_RE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$")
LABEL_RE = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """[(name, {label: value}, float)] of a Prometheus text exposition."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = METRIC_LINE_RE.match(line)
        assert m, f"unparsable metrics line: {line!r}"
        labels = dict(LABEL_RE.findall(m.group(2) or ""))
        samples.append((m.group(1), labels, float(m.group(3))))
    return samples


def find_samples(samples, name, **labels):
    return [(lb, v) for n, lb, v in samples
            if n == name and all(lb.get(k) == v2 for k, v2 in labels.items())]


def test_healthz(client):
    """GET /healthz answers 200 {"status":"ok"} as application/json."""
    r = client.get("/healthz")
    assert_status(r, 200)
    assert media_type(r) == "application/json"
    assert r.json() == {"status": "ok"}


def test_readyz_all_ok(client):
    """GET /readyz answers 200 "ready" with postgres and redis checks ok."""
    r = client.get("/readyz")
    assert_status(r, 200)
    body = r.json()
    assert body["status"] == "ready"
    assert body["checks"]["postgres"] == "ok"
    assert body["checks"]["redis"] == "ok"
    assert set(body["checks"].values()) == {"ok"}


def test_readyz_redis_unreachable(start_api):
    """With Redis unreachable the server still starts; /readyz is 503 not_ready with
    checks.redis=fail and checks.postgres=ok, and /healthz stays 200."""
    srv = start_api(NATTER_REDIS_URL="unix:///nonexistent/x.sock")
    c = Client(srv.base_url)
    r = c.get("/readyz")
    body = assert_problem(r, 503, "not_ready")
    assert body["checks"]["redis"] == "fail"
    assert body["checks"]["postgres"] == "ok"
    assert_status(c.get("/healthz"), 200)


def test_metrics_counts_requests_by_route(client):
    """/metrics is Prometheus text with natter_http_requests_total labelled by method,
    route pattern and status, a duration histogram, and the db pool gauges; concrete ids
    and unknown paths never become label values."""
    for _ in range(3):
        assert_status(client.get("/healthz"), 200)
    acct = new_account(client)
    odd_id = 987654321012
    client.get(f"/v1/users/{odd_id}", token=acct.token)
    junk = "nope-" + secrets.token_hex(4)
    client.get("/" + junk)

    r = client.get("/metrics")
    assert_status(r, 200)
    assert media_type(r) == "text/plain"
    text = r.text
    assert "# TYPE natter_http_requests_total counter" in text
    assert "# TYPE natter_http_request_duration_seconds histogram" in text
    samples = parse_metrics(text)

    health = find_samples(samples, "natter_http_requests_total",
                          method="GET", route="/healthz", status="200")
    assert health and health[0][1] >= 3, f"no GET /healthz 200 counter >= 3 in:\n{text}"
    buckets = find_samples(samples, "natter_http_request_duration_seconds_bucket",
                           method="GET", route="/healthz", status="200")
    assert buckets, "no histogram bucket for GET /healthz"
    assert any(lb.get("le") == "+Inf" and v >= 3 for lb, v in buckets)
    assert find_samples(samples, "natter_http_request_duration_seconds_count",
                        method="GET", route="/healthz", status="200")
    assert find_samples(samples, "natter_http_request_duration_seconds_sum",
                        method="GET", route="/healthz", status="200")
    pool = find_samples(samples, "natter_db_pool_size")
    assert pool and pool[0][1] > 0
    assert find_samples(samples, "natter_db_pool_in_use")

    assert str(odd_id) not in text, "a concrete id became a label value"
    assert junk not in text, "an unknown path became a label value"
    assert all(lb.get("route") for n, lb, _ in samples if n == "natter_http_requests_total")

    # the counter moves
    for _ in range(2):
        client.get("/healthz")
    again = find_samples(parse_metrics(client.get("/metrics").text),
                         "natter_http_requests_total", method="GET", route="/healthz",
                         status="200")
    assert again[0][1] >= health[0][1] + 2


def test_openapi_yaml_is_served(client):
    """GET /openapi.yaml serves exactly openapi/openapi.yaml as application/yaml."""
    r = client.get("/openapi.yaml")
    assert_status(r, 200)
    assert media_type(r) == "application/yaml"
    assert r.content == SPEC_PATH.read_bytes()
    assert "paths" in yaml.safe_load(r.content)


def test_spec_is_sound(spec):
    """The spec is OpenAPI 3.1, every $ref resolves and every schema is a valid JSON
    Schema 2020-12 without OpenAPI 3.0 leftovers (`nullable`)."""
    doc = spec.doc
    assert str(doc.get("openapi", "")).startswith("3.1"), doc.get("openapi")
    problems = []

    def walk(node, where):
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                try:
                    spec.pointer(ref)
                except (KeyError, IndexError, ValueError):
                    problems.append(f"{where}: unresolvable $ref {ref}")
            if "nullable" in node and isinstance(node.get("nullable"), bool):
                problems.append(f"{where}: `nullable` is OpenAPI 3.0; use type: [..., 'null']")
            for k, v in node.items():
                walk(v, f"{where}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}/{i}")

    walk(doc, "#")
    schemas = list(((doc.get("components") or {}).get("schemas") or {}).items())
    for method, template, op in spec.operations():
        for status, robj in (op.get("responses") or {}).items():
            for media, mobj in (spec.deref(robj).get("content") or {}).items():
                if "schema" in mobj:
                    schemas.append((f"{method} {template} {status} {media}", mobj["schema"]))
    for name, schema in schemas:
        try:
            Draft202012Validator.check_schema(schema)
        except Exception as exc:  # SchemaError
            problems.append(f"{name}: {exc}")
    assert not problems, "\n".join(problems)


def test_request_id_generated(client):
    """Without an incoming X-Request-Id a sane one is generated, different per request."""
    ids = {client.get("/healthz").headers["X-Request-Id"] for _ in range(3)}
    assert len(ids) == 3
    for rid in ids:
        assert re.fullmatch(r"[A-Za-z0-9._-]{1,64}", rid)


def test_request_id_sane_is_echoed(client):
    """A sane incoming X-Request-Id (<= 64 chars of [A-Za-z0-9._-]) is echoed, also in
    problem bodies."""
    for rid in ["abc-123_x.Y", "r" + secrets.token_hex(4), "x" * 64]:
        r = client.get("/healthz", headers={"X-Request-Id": rid})
        assert r.headers["X-Request-Id"] == rid
    r = client.get("/no-such-route", headers={"X-Request-Id": "trace-42"})
    body = assert_problem(r, 404, "not_found")
    assert body["request_id"] == "trace-42"


def test_request_id_insane_is_replaced(client):
    """An insane incoming X-Request-Id (too long, spaces, quotes, non-ASCII) is replaced
    by a generated sane one."""
    for rid in ["y" * 65, "z" * 200, "has space", 'quo"te', "semi;colon", "caf\u00e9", "a/b"]:
        r = client.get("/healthz", headers={"X-Request-Id": rid})
        got = r.headers["X-Request-Id"]
        assert got != rid
        assert re.fullmatch(r"[A-Za-z0-9._-]{1,64}", got), got


def test_unknown_route_404(client):
    """Paths with no route answer 404 not_found problems, whatever the method (a GET of
    "/" is the web client's page, test_web_static.py; other methods of it are not)."""
    assert_problem(client.post("/", json={}), 404, "not_found")
    assert_problem(client.get("/no-such-route"), 404, "not_found")
    assert_problem(client.get("/v1/nope"), 404, "not_found")
    assert_problem(client.post("/v1/nope", json={}), 404, "not_found")
    assert_problem(client.get("/healthz/extra"), 404, "not_found")


def _allow(resp):
    return {m.strip().upper() for m in resp.headers.get("Allow", "").split(",") if m.strip()}


def test_wrong_method_405(client):
    """A known path with a wrong method answers 405 method_not_allowed with an Allow header
    listing the path's methods."""
    r = client.delete("/healthz")
    assert_problem(r, 405, "method_not_allowed")
    assert "GET" in _allow(r)

    r = client.get("/v1/auth/login")
    assert_problem(r, 405, "method_not_allowed")
    assert "POST" in _allow(r)
    assert "GET" not in _allow(r)

    acct = new_account(client)
    r = client.put("/v1/users/me", json={"display_name": "x"}, token=acct.token)
    assert_problem(r, 405, "method_not_allowed")
    assert {"GET", "PATCH"} <= _allow(r)
    me = client.get("/v1/users/me", token=acct.token)
    assert_status(me, 200)
    assert me.json()["display_name"] == acct.user["display_name"]


def test_routes_match_spec(spec):
    """`natter-api --routes` lists exactly the (method, path) operations of the spec
    (OPTIONS aside)."""
    proc = run_binary("natter-api", ["--routes"])
    assert proc.returncode == 0, proc.output
    routes = set()
    for line in proc.stdout.decode().splitlines():
        if not line.strip():
            continue
        m = re.fullmatch(r"([A-Z]+)\s+(\S+)", line.strip())
        assert m, f"--routes line is not 'METHOD PATTERN': {line!r}"
        if m.group(1) != "OPTIONS":
            routes.add((m.group(1), normalize_template(m.group(2))))
    documented = {(method, normalize_template(template))
                  for method, template, _ in spec.operations() if method != "OPTIONS"}
    assert routes == documented, (f"only in --routes: {sorted(routes - documented)}; "
                                  f"only in the spec: {sorted(documented - routes)}")


WORKER_ONLY_VARS = {"NATTER_WORKER_THREADS", "NATTER_WORKER_LISTEN"}


def test_help_lists_every_variable():
    """`natter-api --help` exits 0 and documents every NATTER_ variable of CONTRACT.md
    (except the worker-only ones, see test_worker_help)."""
    names = [n for n in contract_env_vars() if n not in WORKER_ONLY_VARS]
    assert "NATTER_JWT_SECRET" in names and len(names) >= 15
    proc = run_binary("natter-api", ["--help"])
    assert proc.returncode == 0, proc.output
    missing = [n for n in names if n not in proc.output]
    assert not missing, f"--help does not mention {missing}:\n{proc.output}"


def test_worker_help():
    """`natter-worker --help` exits 0 and documents NATTER_WORKER_THREADS, its operator
    listener and its connections."""
    proc = run_binary("natter-worker", ["--help"])
    assert proc.returncode == 0, proc.output
    for name in ("NATTER_WORKER_THREADS", "NATTER_WORKER_LISTEN", "NATTER_DATABASE_URL",
                 "NATTER_REDIS_URL"):
        assert name in proc.output, proc.output


def test_log_is_json_lines_with_request_ids(start_api):
    """natter-api logs one JSON object per line (ts, level, msg) and the request id of a
    request appears in the log."""
    srv = start_api()
    rid = "logcheck-" + secrets.token_hex(6)
    r = Client(srv.base_url).get("/healthz", headers={"X-Request-Id": rid})
    assert_status(r, 200)
    srv.stop()
    srv.assert_clean_exit()
    objs, bad = parse_json_log(srv.log_text())
    assert not bad, f"non-JSON log lines: {bad[:5]}"
    assert objs, "empty log"
    for obj in objs:
        assert {"ts", "level", "msg"} <= obj.keys(), obj
    assert rid in srv.log_text(), "the request id does not appear in the log"


# --------------------------------------------------------------------------- generic answers

CORS_ORIGIN = "https://app.example.com"
OTHER_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def concrete(template: str) -> str:
    """A path that the template matches: every {param} becomes 1 (a uuid for attachments)."""
    uuid = "3b241101-e2bb-4255-8caf-4136c566a962"
    return re.sub(r"\{[^}]+\}", lambda m: uuid if template.startswith("/v1/attachments/")
                  else "1", template)


def documented_methods(spec):
    """{template: {METHOD, ...}} of the spec's operations other than OPTIONS."""
    out = {}
    for method, template, _ in spec.operations():
        out.setdefault(template, set())
        if method != "OPTIONS":
            out[template].add(method)
    return out


def test_generic_answers_are_documented(spec):
    """The spec documents the answers no single operation owns: the 404 of a path that
    matches no route, the 405 (with Allow) of a method a path does not list, and, on
    every path, the CORS preflight (an `options` operation: 204 with the Access-Control
    headers, 403 cors_origin_denied, 405 for an OPTIONS that is not a preflight)."""
    generic = spec.doc.get("x-natter-generic-responses") or {}
    assert spec.deref(generic["unknownPath"]["404"]) is spec.deref(
        {"$ref": "#/components/responses/NotFound"})
    not_allowed = spec.deref(generic["unsupportedMethod"]["405"])
    assert "Allow" in not_allowed["headers"]
    missing = []
    for template in documented_methods(spec):
        item = spec.deref(dict(spec.doc["paths"][template]))
        op = item.get("options")
        if op is None:
            missing.append(template)
            continue
        responses = op["responses"]
        assert set(responses) == {"204", "403", "405"}, (template, sorted(responses))
        headers = spec.deref(responses["204"])["headers"]
        assert {"Access-Control-Allow-Origin", "Access-Control-Allow-Methods",
                "Access-Control-Allow-Headers", "Access-Control-Max-Age"} <= set(headers)
        assert "Allow" in spec.deref(responses["405"])["headers"]
    assert not missing, f"paths without their CORS preflight (`options`): {missing}"


def test_generic_answers_match_spec(start_api, spec):
    """What the server answers outside the operations is what the spec documents, for
    every path: a path matching no route is the documented 404 not_found; every method
    a path does not list is the documented 405 with Allow = exactly the path's methods;
    a preflight from an allowed origin is the documented 204, from another origin 403
    cors_origin_denied, and an OPTIONS without preflight headers the documented 405.
    (The client checks each answer against the spec's response objects.)"""
    srv = start_api(NATTER_CORS_ORIGINS=CORS_ORIGIN)
    c = Client(srv.base_url, spec)
    try:
        # ("/" itself is the web client's page: test_web_static.py)
        for path in ["/index.htm", "/no-such-route", "/v1/nope", "/healthz/extra", "/v1/chats/1/x"]:
            for method in ("GET", "POST", "DELETE"):
                assert_problem(c.request(method, path), 404, "not_found")
        for method in ("POST", "DELETE"):
            assert_problem(c.request(method, "/"), 404, "not_found")
        for template, methods in documented_methods(spec).items():
            path = concrete(template)
            for method in OTHER_METHODS:
                if method in methods:
                    continue
                r = c.request(method, path)
                assert_problem(r, 405, "method_not_allowed")
                assert _allow(r) == methods, (template, r.headers.get("Allow"))
                assert re.fullmatch(r"[A-Z]+(, [A-Z]+)*", r.headers["Allow"]), r.headers
            asked = sorted(methods)[0]
            r = c.request("OPTIONS", path, headers={"Origin": CORS_ORIGIN,
                                                    "Access-Control-Request-Method": asked})
            assert_status(r, 204)
            assert r.headers["Access-Control-Allow-Origin"] == CORS_ORIGIN
            assert asked in r.headers["Access-Control-Allow-Methods"]
            r = c.request("OPTIONS", path, headers={"Origin": "https://evil.example.com",
                                                    "Access-Control-Request-Method": asked})
            assert_problem(r, 403, "cors_origin_denied")
            r = c.request("OPTIONS", path)
            assert_problem(r, 405, "method_not_allowed")
            assert _allow(r) == methods, (template, r.headers.get("Allow"))
        # a preflight is answered on a path that matches no route too
        r = c.request("OPTIONS", "/v1/nope", headers={"Origin": CORS_ORIGIN,
                                                      "Access-Control-Request-Method": "GET"})
        assert_status(r, 204)
    finally:
        c.close()


def test_spec_examples_are_valid(spec):
    """Every example of a response body in the spec is valid against its schema (JSON
    Schema 2020-12 with python-jsonschema; Redocly's own example check is off because it
    misreads `unevaluatedProperties`, see .redocly.yaml)."""
    checked, problems = 0, []
    for method, template, op in spec.operations():
        for status, robj in (op.get("responses") or {}).items():
            for media, mobj in (spec.deref(robj).get("content") or {}).items():
                mobj = spec.deref(mobj)
                if "example" in mobj and "schema" in mobj:
                    checked += 1
                    problems += [f"{method} {template} {status} {media}: {m}"
                                 for m in spec.validate(mobj["schema"], mobj["example"])]
    assert checked > 50
    assert not problems, "\n".join(problems)


def test_metrics_pass_promtool(start_api, worker, spec):
    """natter-api's /metrics — which also shows the worker pool's queue, counters and
    job latency — passes `promtool check metrics` (Debian's prometheus package): every
    family has # HELP and # TYPE, names and units follow the conventions. Checked after a
    worker has started and run, so the job families carry values. (Each natter-worker's
    own /metrics, this process's figures only, is checked in test_worker_metrics.py.)"""
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found (`make test` installs Debian's prometheus package)"
    srv = start_api()
    worker(threads=1)
    c = Client(srv.base_url, spec)
    try:
        client_get = c.get("/healthz")
        assert_status(client_get, 200)
        text = c.get("/metrics").text
    finally:
        c.close()
    for family in ("natter_jobs_done_total", "natter_jobs_retried_total",
                   "natter_jobs_dead_total", "natter_pushes_sent_total"):
        assert f"# HELP {family} " in text, f"{family} has no # HELP"
    proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), \
        f"promtool check metrics:\n{proc.stdout}\n{proc.stderr}"
