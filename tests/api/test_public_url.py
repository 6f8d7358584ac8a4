"""NATTER_PUBLIC_URL (issue 11, item 14): its default follows NATTER_LISTEN_ADDR and
NATTER_PORT, it is normalised (a trailing slash) or refused (a path prefix, another
scheme) at start, and natter-api reaches its embedded store directly, never through it."""
import pytest

from attachlib import (complete, fetch_download, put_upload, request_upload, start_store_api,
                       store_put, upload_attachment)
from chatlib import make_group, new_users
from natterlib import api_env, free_port, new_state_dir, run_binary, tail


def member(store):
    ((u, tok),) = new_users(store.client, 1, prefix="pub")
    return tok, make_group(store.client, tok, "public url", [])["id"]


def test_default_follows_port(start_api):
    """`NATTER_PORT=<p>` without NATTER_PUBLIC_URL: upload URLs point at
    http://127.0.0.1:<p>/ and the whole upload, complete and download work."""
    store = start_store_api(start_api, NATTER_PUBLIC_URL=None)
    tok, cid = member(store)
    data = b"on the right port"
    up = request_upload(store.client, tok, cid, "p.txt", "text/plain", len(data), data=data)
    assert up["upload"]["url"].startswith(f"http://127.0.0.1:{store.srv.port}/natter/att/"), up
    att = upload_attachment(store.client, tok, cid, data, "q.txt", "text/plain")
    assert fetch_download(store.client, tok, att["id"]).content == data


def test_trailing_slash_is_dropped(start_api):
    """NATTER_PUBLIC_URL with a trailing slash works like without one (no '//' in the
    URLs, no 500s)."""
    port = free_port()
    store = start_store_api(start_api, NATTER_PORT=str(port),
                            public_url=f"http://127.0.0.1:{port}/")
    assert store.srv.port == port
    tok, cid = member(store)
    data = b"slash"
    up = request_upload(store.client, tok, cid, "s.txt", "text/plain", len(data), data=data)
    assert up["upload"]["url"].startswith(f"http://127.0.0.1:{port}/natter/att/"), up
    assert "//natter" not in up["upload"]["url"]
    att = upload_attachment(store.client, tok, cid, data, "t.txt", "text/plain")
    assert fetch_download(store.client, tok, att["id"]).content == data


@pytest.mark.parametrize("url,says", [
    ("http://127.0.0.1:8080/natter", "path prefix"),
    ("https://chat.example.com/api/", "path prefix"),
    ("ftp://127.0.0.1:8080", "http"),
    ("http://127.0.0.1:8080/?a=b", "query"),
    ("127.0.0.1:8080", "NATTER_PUBLIC_URL"),
])
def test_bad_public_url_refused_at_start(migrated, url, says):
    """A public URL natter-api cannot serve (a path prefix behind a reverse proxy,
    another scheme, a query) makes it exit non-zero at start, naming NATTER_PUBLIC_URL
    and why."""
    env = api_env(new_state_dir("puburl"), free_port(), NATTER_PUBLIC_URL=url)
    proc = run_binary("natter-api", [], env, timeout=10)
    assert proc.returncode != 0, tail(proc.output)
    assert "NATTER_PUBLIC_URL" in proc.output and says in proc.output, tail(proc.output)


def test_complete_never_goes_through_public_url(start_api):
    """Behind a proxy: NATTER_PUBLIC_URL names an address natter-api itself cannot reach
    (a port nobody listens on here). The client's PUT reaches the store through 'the
    proxy' (the real port, with the public Host header) and complete is 200: natter-api
    looks at its own store directly."""
    dead = free_port()
    store = start_store_api(start_api, public_url=f"http://127.0.0.1:{dead}")
    tok, cid = member(store)
    data = b"through the proxy"
    up = request_upload(store.client, tok, cid, "x.txt", "text/plain", len(data), data=data)
    url = up["upload"]["url"]
    assert url.startswith(f"http://127.0.0.1:{dead}/natter/att/"), url
    proxied = url.replace(f"http://127.0.0.1:{dead}", store.base_url, 1)
    r = store_put(proxied, data, dict(up["upload"]["headers"], Host=f"127.0.0.1:{dead}"))
    assert r.status_code == 200, r.text
    att = complete(store.client, tok, up["attachment"]["id"])
    assert att["status"] == "uploaded"


def test_worker_reaches_store_at_store_url(private_redis, start_api, worker):
    """natter-worker deletes abandoned uploads through NATTER_STORE_URL (the API's own
    address), whatever NATTER_PUBLIC_URL says: with a public URL nobody listens on, a
    stale pending upload's object and row are still removed."""
    from attachlib import (attachment_status, backdate_attachment, key_of, store_has,
                           store_worker_env)
    from natterlib import wait_for
    dead = free_port()
    store = start_store_api(start_api, public_url=f"http://127.0.0.1:{dead}",
                            NATTER_REDIS_URL=private_redis.url)
    tok, cid = member(store)
    data = b"abandoned"
    up = request_upload(store.client, tok, cid, "a.txt", "text/plain", len(data), data=data)
    url = up["upload"]["url"].replace(f"http://127.0.0.1:{dead}", store.base_url, 1)
    r = store_put(url, data, dict(up["upload"]["headers"], Host=f"127.0.0.1:{dead}"))
    assert r.status_code == 200, r.text
    att_id = up["attachment"]["id"]
    backdate_attachment(att_id, "2 hours")
    worker(threads=1, NATTER_CLEANUP_INTERVAL="1", NATTER_REDIS_URL=private_redis.url,
           NATTER_PUBLIC_URL=f"http://127.0.0.1:{dead}", **store_worker_env(store))
    wait_for(lambda: attachment_status(att_id) is None, 20,
             "the abandoned attachment's row to be deleted")
    key = key_of(store, up["upload"]["url"])
    assert store_has(store, key) is None
