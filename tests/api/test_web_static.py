"""The web client's files (web/, built into natter-api) served beside the API: `/`, `/docs`,
the embedded set only, with their types, revalidation by ETag and a Content-Security-Policy,
while every API path keeps its problem+json answers."""
import requests

from natterlib import assert_problem


def get(api, path, **kw):
    return requests.get(api.base_url + path, timeout=30, **kw)


def test_index_and_docs_are_served(api):
    """`/` is the app's page and `/docs` the API reference page, both HTML with a CSP that
    keeps scripts to this origin, a strong ETag and revalidation (no blind caching)."""
    for path, marker in [("/", 'src="app/main.js"'), ("/docs", "redoc.standalone.js")]:
        r = get(api, path)
        assert r.status_code == 200, (path, r.status_code, r.text[:200])
        assert r.headers["Content-Type"] == "text/html; charset=utf-8"
        assert marker in r.text
        csp = r.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "object-src 'none'" in csp
        assert r.headers["Cache-Control"] == "no-cache"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        etag = r.headers["ETag"]
        assert etag.startswith('"') and etag.endswith('"') and len(etag) == 34
        again = get(api, path, headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""
        other = get(api, path, headers={"If-None-Match": '"0000"'})
        assert other.status_code == 200


def test_assets_have_their_types(api):
    """Scripts, styles and the vendored Redoc bundle come with their media types."""
    cases = {"/app/main.js": "text/javascript; charset=utf-8", "/app/api.js": "text/javascript; charset=utf-8",
             "/app/style.css": "text/css; charset=utf-8", "/app/icon.svg": "image/svg+xml",
             "/vendor/redoc/redoc.standalone.js": "text/javascript; charset=utf-8",
             "/vendor/redoc/LICENSE": "text/plain; charset=utf-8"}
    for path, ctype in cases.items():
        r = get(api, path)
        assert r.status_code == 200, path
        assert r.headers["Content-Type"] == ctype, path
        assert "Content-Security-Policy" not in r.headers
    head = requests.head(api.base_url + "/app/main.js", timeout=30)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["Content-Length"]) == len(get(api, "/app/main.js").content)


def test_only_the_embedded_set_is_served(api):
    """Nothing outside the embedded files can be named (traversal, the READMEs left out,
    the build's sources), other methods than GET/HEAD are not served, and the API's own
    404 and 405 answers are unchanged."""
    for path in ["/../Makefile", "/app/../../Makefile", "/%2e%2e/Makefile", "/web/index.html",
                 "/README.md", "/vendor/README.md", "/app/", "/app", "/docs/", "/index.htm",
                 "/app/main.js/", "//app/main.js"]:
        r = get(api, path)
        assert_problem(r, 404, "not_found")
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        r = requests.request(method, api.base_url + "/app/main.js", timeout=30)
        assert_problem(r, 404, "not_found")
    assert_problem(get(api, "/v1/nope"), 404, "not_found")
    r = requests.post(api.base_url + "/healthz", timeout=30)
    assert_problem(r, 405, "method_not_allowed")
