"""Attachment hardening (issue 11): a quota on pending attachments per user (item 5),
completed attachments whose bytes never change (item 6: the declared SHA-256 is signed
into the upload URL and the store holds the upload to it), filenames bounded in bytes so
that every accepted name can be downloaded (item 7).

Servers come from attachlib.start_store_api (their pre-signed URLs point at themselves)."""
import concurrent.futures

import pytest

from attachlib import (checksum_b64, complete, complete_raw,
                       content_disposition_variants, download_info, fetch_download, presign,
                       put_upload, random_bytes, request_upload, request_upload_raw, sha256,
                       start_store_api, store_get, store_put, upload_attachment)
from chatlib import make_group, new_users
from natterlib import (api_env, assert_problem, assert_status, describe, free_port,
                       new_state_dir, psql, run_binary, tail)

PENDING_MAX = 3
PENDING_MAX_BYTES = 1000


@pytest.fixture(scope="module")
def store(start_api_module):
    """A natter-api with a small pending quota: 3 attachments, 1000 bytes."""
    return start_store_api(start_api_module,
                           NATTER_ATTACHMENT_PENDING_MAX=str(PENDING_MAX),
                           NATTER_ATTACHMENT_PENDING_MAX_BYTES=str(PENDING_MAX_BYTES),
                           NATTER_ATTACHMENT_MAX_BYTES=str(PENDING_MAX_BYTES))


def member(store):
    """A logged-in user and a group of their own: (User, token, chat id)."""
    ((u, tok),) = new_users(store.client, 1, prefix="lim")
    return u, tok, make_group(store.client, tok, "limits", [])["id"]


# --------------------------------------------------------------------------- item 5

def test_pending_quota_by_count(store):
    """With NATTER_ATTACHMENT_PENDING_MAX=3 a user's fourth pending attachment is 409
    too_many_pending_attachments (pending 3, the limits and the TTL in the problem) and
    creates no row; completing one frees a place; another user is not affected."""
    c = store.client
    u, tok, cid = member(store)
    data = b"complete me"
    first = request_upload(c, tok, cid, "a.txt", "text/plain", len(data), data=data)
    for name in ("b.txt", "c.txt"):
        request_upload(c, tok, cid, name, "text/plain", 1)
    r = request_upload_raw(c, tok, cid, "d.txt", "text/plain", 1)
    body = assert_problem(r, 409, "too_many_pending_attachments")
    assert (body["pending"], body["max_pending"], body["max_pending_bytes"]) == \
        (3, PENDING_MAX, PENDING_MAX_BYTES), body
    assert body["pending_ttl_seconds"] == 3600, body
    rows = psql("SELECT count(*) FROM attachments WHERE uploader_id = $1", u["id"])
    assert rows == "3"

    _, other_tok, other_cid = member(store)
    request_upload(c, other_tok, other_cid, "theirs.txt", "text/plain", 1)

    assert_status(put_upload(first["upload"], data), 200)
    complete(c, tok, first["attachment"]["id"])
    request_upload(c, tok, cid, "d.txt", "text/plain", 1)
    assert_problem(request_upload_raw(c, tok, cid, "e.txt", "text/plain", 1), 409,
                   "too_many_pending_attachments")


def test_pending_quota_by_bytes(store):
    """Pending attachments may declare at most NATTER_ATTACHMENT_PENDING_MAX_BYTES (1000)
    together: 600 then 400 bytes are fine, one more byte is 409 with pending_bytes 1000."""
    c = store.client
    _, tok, cid = member(store)
    request_upload(c, tok, cid, "six.bin", "application/pdf", 600)
    assert_problem(request_upload_raw(c, tok, cid, "five.bin", "application/pdf", 500), 409,
                   "too_many_pending_attachments")
    request_upload(c, tok, cid, "four.bin", "application/pdf", 400)
    body = assert_problem(request_upload_raw(c, tok, cid, "one.bin", "application/pdf", 1),
                          409, "too_many_pending_attachments")
    assert (body["pending"], body["pending_bytes"]) == (2, 1000), body


def test_pending_quota_holds_under_concurrency(store):
    """Twelve upload requests of one user at once: exactly NATTER_ATTACHMENT_PENDING_MAX
    (3) get 201, the others 409 too_many_pending_attachments, and 3 rows exist."""
    c = store.client
    u, tok, cid = member(store)

    def ask(i):
        return request_upload_raw(c, tok, cid, f"race-{i}.txt", "text/plain", 1)

    with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(ask, range(12)))
    codes = sorted(r.status_code for r in answers)
    assert codes == [201] * 3 + [409] * 9, [describe(r) for r in answers]
    for r in answers:
        if r.status_code == 409:
            assert r.json()["code"] == "too_many_pending_attachments", describe(r)
    assert psql("SELECT count(*) FROM attachments WHERE uploader_id = $1", u["id"]) == "3"


def test_abandoned_pending_stop_counting(store):
    """A pending attachment older than NATTER_ATTACHMENT_PENDING_TTL (an hour) no longer
    counts toward the quota (the worker reclaims it: test_attachments.py
    test_cleanup_deletes_stale_pending)."""
    c = store.client
    u, tok, cid = member(store)
    for name in ("x.txt", "y.txt", "z.txt"):
        request_upload(c, tok, cid, name, "text/plain", 1)
    assert_problem(request_upload_raw(c, tok, cid, "w.txt", "text/plain", 1), 409,
                   "too_many_pending_attachments")
    psql("UPDATE attachments SET created_at = now() - interval '2 hours' "
         "WHERE uploader_id = $1 AND filename = 'x.txt'", u["id"])
    request_upload(c, tok, cid, "w.txt", "text/plain", 1)


@pytest.mark.parametrize("env,var", [
    ({"NATTER_ATTACHMENT_PENDING_TTL": "900"}, "NATTER_ATTACHMENT_PENDING_TTL"),
    ({"NATTER_ATTACHMENT_PENDING_MAX_BYTES": "1000"}, "NATTER_ATTACHMENT_PENDING_MAX_BYTES"),
    ({"NATTER_ATTACHMENT_PENDING_MAX": "0"}, "NATTER_ATTACHMENT_PENDING_MAX"),
])
def test_quota_settings_checked_at_start(migrated, env, var):
    """A pending TTL not above NATTER_UPLOAD_URL_TTL (900) would reclaim uploads in
    progress, a byte quota below NATTER_ATTACHMENT_MAX_BYTES would refuse the largest
    allowed file, a count of 0 every upload: natter-api refuses to start, naming it."""
    proc = run_binary("natter-api", [], api_env(new_state_dir("quota"), free_port(), **env),
                      timeout=10)
    assert proc.returncode != 0, tail(proc.output)
    assert var in proc.output, tail(proc.output)


def test_quota_fields_validated(store):
    """sha256 is required and must be 64 lowercase hex digits (422 validation_failed,
    field sha256); nothing is created."""
    c = store.client
    u, tok, cid = member(store)
    for bad in (None, "", "A" * 64, "0" * 63, "g" * 64, 12):
        r = request_upload_raw(c, tok, cid, "f.txt", "text/plain", 1, sha256=bad)
        assert_problem(r, 422, "validation_failed", "sha256")
    assert psql("SELECT count(*) FROM attachments WHERE uploader_id = $1", u["id"]) == "0"


# --------------------------------------------------------------------------- item 6

def test_completed_bytes_never_change(store):
    """After complete, a second PUT through the same (still valid) upload URL cannot
    change the bytes: other bytes with the signed digest are 400 bad_digest, other bytes
    with their own digest 403 signature_mismatch (the digest is signed); the same bytes
    again are 200. Every member still downloads the original bytes; the attachment
    carries the declared sha256."""
    c = store.client
    ((a, ta), (b, tb)) = new_users(c, 2, prefix="imm")
    cid = make_group(c, ta, "immutable", [b["id"]])["id"]
    data = b"the bytes everyone agreed on\n" * 5
    up = request_upload(c, ta, cid, "agreed.txt", "text/plain", len(data), data=data)
    assert_status(put_upload(up["upload"], data), 200)
    att = complete(c, ta, up["attachment"]["id"])
    assert att["sha256"] == sha256(data)

    swapped = b"the bytes somebody swapped in\n"[:len(data)].ljust(len(data), b"!")
    assert len(swapped) == len(data)
    assert_problem(put_upload(up["upload"], swapped), 400, "bad_digest")
    hdrs = dict(up["upload"]["headers"], **{"x-amz-checksum-sha256": checksum_b64(swapped)})
    assert_problem(store_put(up["upload"]["url"], swapped, hdrs), 403, "signature_mismatch")
    assert_status(put_upload(up["upload"], data), 200)

    for tok in (ta, tb):
        got = fetch_download(c, tok, att["id"])
        assert got.content == data
        assert got.headers.get("x-amz-checksum-sha256") == checksum_b64(data), got.headers


def test_upload_of_other_bytes_refused(store):
    """Before complete too: an upload whose body is not the declared bytes (same size) is
    400 bad_digest, nothing is stored and complete says 409 upload_missing."""
    c = store.client
    _, tok, cid = member(store)
    data = b"declared"
    up = request_upload(c, tok, cid, "d.txt", "text/plain", len(data), data=data)
    assert_problem(put_upload(up["upload"], b"DECLARED"), 400, "bad_digest")
    assert_problem(complete_raw(c, tok, up["attachment"]["id"]), 409, "upload_missing")


# --------------------------------------------------------------------------- item 7

FOUR_BYTE = "\U0001F600"          # 😀: 4 bytes of UTF-8


def test_filename_bounded_in_bytes(store):
    """filename is at most 255 bytes of UTF-8: 63 four-byte characters plus 'a.t' (255
    bytes) are accepted and downloadable (200 with the full Content-Disposition), 64 of
    them (256 bytes) are 422 validation_failed (field filename, max_bytes 255), and 255
    ASCII characters are still fine."""
    c = store.client
    _, tok, cid = member(store)
    longest = FOUR_BYTE * 63 + "a.t"
    assert len(longest.encode()) == 255
    data = b"a long name"
    att = upload_attachment(c, tok, cid, data, longest, "text/plain")
    assert att["filename"] == longest
    got = fetch_download(c, tok, att["id"])
    assert got.content == data
    assert got.headers.get("Content-Disposition") in content_disposition_variants(longest)

    body = assert_problem(request_upload_raw(c, tok, cid, FOUR_BYTE * 64, "text/plain", 1),
                          422, "validation_failed", "filename")
    assert body["max_bytes"] == 255, body
    body = assert_problem(request_upload_raw(c, tok, cid, "é" * 128, "text/plain", 1),
                          422, "validation_failed", "filename")
    ascii_name = "n" * 251 + ".txt"
    att = upload_attachment(c, tok, cid, b"x", ascii_name, "text/plain")
    assert fetch_download(c, tok, att["id"]).headers.get("Content-Disposition") in \
        content_disposition_variants(ascii_name)


def test_long_stored_filename_still_served(store):
    """A name stored before the byte bound (166 four-byte characters, written straight
    into the row) is still downloadable: the Content-Disposition carries it cut to 255
    bytes at a character boundary, and the store answers 200 rather than closing the
    connection."""
    c = store.client
    _, tok, cid = member(store)
    att = upload_attachment(c, tok, cid, b"old row", "short.txt", "text/plain")
    psql("UPDATE attachments SET filename = $1 WHERE id = $2::uuid", FOUR_BYTE * 166,
         att["id"])
    url = download_info(c, tok, att["id"])["download"]["url"]
    r = store_get(url)
    assert_status(r, 200)
    assert r.content == b"old row"
    assert r.headers.get("Content-Disposition") in content_disposition_variants(FOUR_BYTE * 63)


def test_store_refuses_oversized_overrides(store):
    """A GET signed with a response-content-disposition too large for the answer's head
    (4,000 bytes) gets 400 invalid_parameter, an answer, not a closed connection."""
    c = store.client
    _, tok, cid = member(store)
    upload_attachment(c, tok, cid, b"x", "x.txt", "text/plain")
    key = psql("SELECT object_key FROM attachments WHERE chat_id = $1", cid)
    cd = "attachment; filename*=UTF-8''" + "%F0%9F%98%80" * 330
    r = store_get(presign(store, "GET", key, ResponseContentDisposition=cd))
    assert_problem(r, 400, "invalid_parameter")

