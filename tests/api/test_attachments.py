"""Attachments (docs/CONTRACT.md, issue 6): upload URLs, the PUT to the embedded store,
complete, attachments in messages and events, download URLs (JSON and ?redirect=1),
the refusals that must store nothing, URL expiry, and the worker's cleanup of stale
pending attachments.

Every server here is started by attachlib.start_store_api, so its pre-signed URLs point at
itself (NATTER_PUBLIC_URL = its own address) and use a known NATTER_S3_SECRET_KEY. The
module's shared server runs on the contract's defaults otherwise (access key
natter-embedded, region us-east-1, bucket natter, TTLs 900/300, 100 MiB, the default
types). API calls go through the OpenAPI-checking Client; store calls are plain HTTP.
"""
import base64
import datetime
import re
import time
import uuid
from urllib.parse import unquote

import pytest

from attachlib import (DEFAULT_DOWNLOAD_TTL, DEFAULT_MAX_BYTES, DEFAULT_UPLOAD_TTL,
                       PLACEHOLDER_SHA256, SIGNED_PUT_HEADERS, checksum_b64, amz_date, assert_expires_at, attachment_path,
                       attachment_rows, attachment_status, backdate_attachment, blob_files,
                       check_presigned, complete, complete_raw, content_disposition_variants,
                       download_info, download_raw, fetch_download, files_holding, flip_hex,
                       key_of, object_key_db, parse_time, presign, put_upload, random_bytes,
                       raw_request, replace_param, request_upload, request_upload_raw,
                       sha256, start_store_api, store_get, store_has, store_put,
                       store_worker_env, target_of, upload_attachment, url_param,
                       wait_blob_files, with_path)
from chatlib import (chat_snapshot, delete_message_raw, events, get_message, history_page,
                     inbox_rows, make_group, missing_chat_id, new_users, remove_member, send,
                     send_raw)
from natterlib import (RFC3339_UTC_RE, assert_problem, assert_status, describe, free_port,
                       wait_for)

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TTL_SHORT = 10                # seconds: the smallest NATTER_UPLOAD/DOWNLOAD_URL_TTL
CLEANUP_WAIT = 20             # seconds until the worker removed the stale attachments
ATTACHMENT_KEYS = {"id", "chat_id", "uploader_id", "filename", "content_type", "size", "sha256",
                   "status", "created_at", "uploaded_at"}


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def store(start_api_module):
    """The module's natter-api: embedded store, contract defaults but the secret."""
    return start_store_api(start_api_module)


def group(store, n=2, title="files"):
    """n logged-in users of `store` and a group of them: ([(User, token)], chat id)."""
    users = new_users(store.client, n, prefix="at")
    cid = make_group(store.client, users[0][1], title, [u["id"] for u, _ in users[1:]])["id"]
    return users, cid


def ref(att: dict) -> dict:
    """The {id, filename, content_type, size} a Message lists for an attachment."""
    return {k: att[k] for k in ("id", "filename", "content_type", "size")}


def expect_problem(what: str, resp, status: int, code, field=None):
    """assert_problem, naming the case that failed."""
    try:
        return assert_problem(resp, status, code, field)
    except AssertionError as exc:
        raise AssertionError(f"{what}: {exc}") from None


def assert_nothing_stored(store, client, tok, att_id, key, files_before):
    """The refused upload left no object (GET of the key: 404 no_such_key; no new or
    temp file in the data directory), complete says 409 upload_missing and the row is
    still pending."""
    assert store_has(store, key) is None, f"an object was stored under {key}"
    files = wait_blob_files(store, files_before)
    assert files == files_before, \
        f"the data directory changed: before {files_before}, after {files}"
    assert_problem(complete_raw(client, tok, att_id), 409, "upload_missing")
    assert attachment_status(att_id) == "pending"


def check_attachment(att: dict, *, chat_id, uploader_id, filename, content_type, size,
                     status):
    assert set(att) == ATTACHMENT_KEYS, att
    assert UUID_RE.match(att["id"]), att
    assert (att["chat_id"], att["uploader_id"], att["filename"], att["content_type"],
            att["size"], att["status"]) == (chat_id, uploader_id, filename, content_type,
                                            size, status), att
    assert RFC3339_UTC_RE.match(att["created_at"]), att
    if status == "pending":
        assert att["uploaded_at"] is None, att
    else:
        assert RFC3339_UTC_RE.match(att["uploaded_at"]), att
        assert parse_time(att["uploaded_at"]) >= parse_time(att["created_at"]), att


# --------------------------------------------------------------------------- the happy path

def test_upload_url_fields(store):
    """POST /v1/chats/{id}/attachments by a member: 201 with a pending Attachment
    (content_type stored lowercase, uploaded_at null, sha256 as declared), Location
    /v1/attachments/{id}, and upload {method PUT, url, headers {Content-Type,
    Content-Length, x-amz-checksum-sha256 (base64 of the digest)} exactly, expires_at}:
    the URL points at NATTER_PUBLIC_URL/natter/att/<chat_id>/<uuid> and is SigV4
    query-signed (X-Amz-Algorithm, -Credential natter-embedded/<day>/us-east-1/s3/
    aws4_request, -Date now, -Expires 900, -SignedHeaders
    content-length;content-type;host;x-amz-checksum-sha256,
    -Signature); expires_at = X-Amz-Date + 900 s; the row is pending with that key."""
    c = store.client
    ((a, ta),), cid = group(store, 1)
    r = request_upload_raw(c, ta, cid, "Holiday Photo.PNG", "Image/PNG", 1234)
    assert_status(r, 201)
    body = r.json()
    assert set(body) == {"attachment", "upload"}, body
    att, up = body["attachment"], body["upload"]
    assert r.headers.get("Location") == attachment_path(att["id"]), describe(r)
    check_attachment(att, chat_id=cid, uploader_id=a["id"], filename="Holiday Photo.PNG",
                     content_type="image/png", size=1234, status="pending")
    assert set(up) == {"method", "url", "headers", "expires_at"}, up
    assert up["method"] == "PUT"
    assert att["sha256"] == PLACEHOLDER_SHA256, att
    assert up["headers"] == {"Content-Type": "image/png", "Content-Length": "1234",
                             "x-amz-checksum-sha256":
                             base64.b64encode(bytes.fromhex(PLACEHOLDER_SHA256)).decode()}, up
    check_presigned(store, up["url"], ttl=DEFAULT_UPLOAD_TTL, signed_headers=SIGNED_PUT_HEADERS)
    assert_expires_at(up["url"], up["expires_at"], DEFAULT_UPLOAD_TTL)
    key = key_of(store, up["url"])
    assert re.fullmatch(rf"att/{cid}/[0-9a-f-]{{36}}", key), key
    assert attachment_status(att["id"]) == "pending"
    assert object_key_db(att["id"]) == key


def test_full_flow_through_embedded_store(store):
    """The whole flow with plain HTTP clients: A asks for an upload URL, PUTs the bytes
    with exactly the listed headers (200), completes (200, uploaded); a message with
    attachment_ids=[id] is 201 and lists the attachment {id, filename, content_type,
    size} (so do GET message and every member's `message` inbox event); B gets a download
    URL (200: the Attachment, a pre-signed GET valid 300 s whose signed
    response-content-disposition / -type carry the filename as an ASCII fallback plus
    filename*=UTF-8''…) and downloads the exact bytes with that Content-Type and
    Content-Disposition; ?redirect=1 is a 302 without body whose Location downloads the
    same bytes."""
    c = store.client
    ((a, ta), (b, tb)), cid = group(store, 2)
    filename = 'Résumé "final".pdf'
    data = b"%PDF-1.4\n" + "Résumé — natter\n".encode() * 40 + random_bytes(333)
    up = request_upload(c, ta, cid, filename, "application/pdf", len(data), data=data)
    att, upload = up["attachment"], up["upload"]
    assert upload["headers"] == {"Content-Type": "application/pdf",
                                 "Content-Length": str(len(data)),
                                 "x-amz-checksum-sha256": checksum_b64(data)}
    assert att["sha256"] == sha256(data)
    r = put_upload(upload, data)
    assert_status(r, 200)
    assert r.headers.get("ETag"), describe(r)
    assert attachment_status(att["id"]) == "pending"

    done = complete(c, ta, att["id"])
    check_attachment(done, chat_id=cid, uploader_id=a["id"], filename=filename,
                     content_type="application/pdf", size=len(data), status="uploaded")
    assert done["created_at"] == att["created_at"]
    assert attachment_status(att["id"]) == "uploaded"

    msg = send(c, ta, cid, "my CV", attachment_ids=[att["id"]])
    assert msg["attachment_ids"] == [att["id"]], msg
    assert msg["attachments"] == [ref(done)], msg
    assert get_message(c, tb, cid, msg["seq"])["attachments"] == [ref(done)]
    for user in (a, b):
        evs = [p for p in events(inbox_rows(user["id"]), "message", cid)
               if p["message"]["seq"] == msg["seq"]]
        assert len(evs) == 1, f"user {user['id']}: message events {evs}"
        assert evs[0]["message"]["attachments"] == [ref(done)], evs[0]

    info = download_info(c, tb, att["id"])
    assert set(info) == {"attachment", "download"}, info
    assert info["attachment"] == done
    assert set(info["download"]) == {"url", "expires_at"}, info
    url = info["download"]["url"]
    check_presigned(store, url, ttl=DEFAULT_DOWNLOAD_TTL, signed_headers=None)
    assert_expires_at(url, info["download"]["expires_at"], DEFAULT_DOWNLOAD_TTL)
    assert key_of(store, url) == key_of(store, upload["url"])
    dispositions = content_disposition_variants(filename)
    signed_cd = url_param(url, "response-content-disposition")
    assert signed_cd in dispositions, f"{signed_cd!r} not one of {dispositions}"
    assert url_param(url, "response-content-type") == "application/pdf"
    assert unquote(signed_cd.split("filename*=UTF-8''", 1)[1]) == filename

    got = store_get(url)
    assert_status(got, 200)
    assert sha256(got.content) == sha256(data) and len(got.content) == len(data)
    assert got.headers.get("Content-Type") == "application/pdf", got.headers
    assert got.headers.get("Content-Disposition") == signed_cd, got.headers

    r = download_raw(c, tb, att["id"], redirect=True)
    assert_status(r, 302)
    assert r.content == b"", describe(r)
    loc = r.headers.get("Location")
    assert loc, describe(r)
    check_presigned(store, loc, ttl=DEFAULT_DOWNLOAD_TTL, signed_headers=None)
    assert url_param(loc, "response-content-disposition") in dispositions
    again = store_get(loc)
    assert_status(again, 200)
    assert sha256(again.content) == sha256(data)
    assert again.headers.get("Content-Type") == "application/pdf"
    assert again.headers.get("Content-Disposition") in dispositions


def test_binary_3mb_round_trip(store):
    """A ~3 MB file of random bytes (video/mp4) goes up through the pre-signed PUT and
    comes back through the download URL byte for byte (sha256), with its size."""
    c = store.client
    ((a, ta), (b, tb)), cid = group(store, 2)
    data = random_bytes(3 * 1024 * 1024 + 4097)
    att = upload_attachment(store.client, ta, cid, data, "clip.mp4", "video/mp4")
    assert att["size"] == len(data)
    got = fetch_download(c, tb, att["id"])
    assert len(got.content) == len(data)
    assert sha256(got.content) == sha256(data)
    assert got.headers.get("Content-Type") == "video/mp4"


def test_empty_file_round_trip(store):
    """A 0-byte attachment: upload headers say Content-Length 0, the PUT with an empty
    body is 200, complete is 200 and the download is an empty 200."""
    c = store.client
    ((a, ta),), cid = group(store, 1)
    up = request_upload(c, ta, cid, "empty.txt", "text/plain", 0, data=b"")
    assert up["upload"]["headers"] == {"Content-Type": "text/plain", "Content-Length": "0",
                                       "x-amz-checksum-sha256": checksum_b64(b"")}
    assert_status(put_upload(up["upload"], b""), 200)
    att = complete(c, ta, up["attachment"]["id"])
    assert att["size"] == 0
    got = fetch_download(c, ta, att["id"])
    assert got.content == b""


def test_attachments_follow_attachment_ids_order(store):
    """A message's `attachments` lists {id, filename, content_type, size} of each
    attachment in the order of the message's attachment_ids (the contract does not say
    whether that keeps the order the client sent), in the 201, GET and history; a message
    without attachments lists none; the idempotent retry returns them too; a tombstone
    lists none."""
    c = store.client
    ((a, ta), (b, tb)), cid = group(store, 2)
    first = upload_attachment(store.client, ta, cid, b"first file\n", "first.txt", "text/plain")
    second = upload_attachment(store.client, ta, cid, random_bytes(500), "second.png", "image/png")
    plain = send(c, ta, cid, "no files")
    assert plain["attachments"] == [] and plain["attachment_ids"] == []
    cm = str(uuid.uuid4())
    msg = send(c, ta, cid, "two files", client_msg_id=cm,
               attachment_ids=[second["id"], first["id"]])
    assert sorted(msg["attachment_ids"]) == sorted([second["id"], first["id"]]), msg
    by_id = {first["id"]: ref(first), second["id"]: ref(second)}
    want = [by_id[i] for i in msg["attachment_ids"]]
    assert msg["attachments"] == want, msg
    assert get_message(c, tb, cid, msg["seq"])["attachments"] == want
    page = history_page(c, tb, cid)
    assert [m["attachments"] for m in page["messages"] if m["seq"] == msg["seq"]] == [want]
    retry = send(c, ta, cid, "two files", client_msg_id=cm,
                 attachment_ids=[second["id"], first["id"]], expect=200)
    assert retry["seq"] == msg["seq"] and retry["attachments"] == want
    assert_status(delete_message_raw(c, ta, cid, msg["seq"]), 204)
    gone = get_message(c, tb, cid, msg["seq"])
    assert gone["attachment_ids"] == [] and gone["attachments"] == [], gone


# --------------------------------------------------------------------------- refused PUTs

def test_refused_uploads_store_nothing(store):
    """PUTs the embedded store must refuse with 403 signature_mismatch and store nothing:
    one hex digit of X-Amz-Signature flipped; the key in the path changed (same query);
    X-Amz-Date moved by one second; a shorter and a longer body than the signed
    Content-Length (each sent with its real Content-Length); another Content-Type; no
    Content-Type. Afterwards the key has no object (404 no_such_key), the data directory
    is unchanged, complete is 409 upload_missing and the row is pending — and the
    untouched URL then works (200)."""
    c = store.client
    ((a, ta),), cid = group(store, 1)
    data = b"the real content of report.txt\n" * 20
    up = request_upload(c, ta, cid, "report.txt", "text/plain", len(data), data=data)
    other = request_upload(c, ta, cid, "other.txt", "text/plain", len(data), data=data)
    url, att_id = up["upload"]["url"], up["attachment"]["id"]
    key, other_key = key_of(store, url), key_of(store, other["upload"]["url"])
    files_before = blob_files(store)

    def hdrs(body, ctype="text/plain"):
        return {"Content-Type": ctype, "Content-Length": str(len(body))}

    date = amz_date(url)
    step = -1 if date.hour or date.minute or date.second else 1   # stay on the same day
    moved = (date + datetime.timedelta(seconds=step)).strftime("%Y%m%dT%H%M%SZ")
    longer = data + b"and some more bytes"
    cases = [
        ("flipped signature digit",
         replace_param(url, "X-Amz-Signature", flip_hex(url_param(url, "X-Amz-Signature"))),
         data, hdrs(data)),
        ("another key in the path", with_path(url, store.key_path(other_key)), data,
         hdrs(data)),
        ("X-Amz-Date moved by a second", replace_param(url, "X-Amz-Date", moved), data,
         hdrs(data)),
        ("body shorter than signed", url, data[:-1], hdrs(data[:-1])),
        ("body longer than signed", url, longer, hdrs(longer)),
        ("other content type", url, data, hdrs(data, "text/html")),
        ("no content type", url, data, {"Content-Length": str(len(data))}),
    ]
    for what, u, body, headers in cases:
        r = store_put(u, body, headers)
        expect_problem(what, r, 403, "signature_mismatch")

    assert_nothing_stored(store, c, ta, att_id, key, files_before)
    assert store_has(store, other_key) is None
    assert attachment_status(other["attachment"]["id"]) == "pending"

    assert_status(put_upload(up["upload"], data), 200)
    assert complete(c, ta, att_id)["size"] == len(data)


def test_chunked_upload_refused(store):
    """A PUT without Content-Length (Transfer-Encoding: chunked) on a valid upload URL is
    refused and stores nothing. The contract's answer is 411 length_required; a chunked
    request cannot carry the signed content-length header, so the store may find the
    signature wrong first: 403 signature_mismatch is accepted too (and is what the
    embedded store answers: it checks the signature before the Content-Length)."""
    c = store.client
    ((a, ta),), cid = group(store, 1)
    data = b"chunk one|chunk two|chunk three"
    up = request_upload(c, ta, cid, "chunks.txt", "text/plain", len(data), data=data)
    files_before = blob_files(store)
    r = raw_request(store.base_url, "PUT", target_of(up["upload"]["url"]),
                    headers={"Content-Type": "text/plain"},
                    chunks=[data[:9], data[9:19], data[19:]])
    if r.status_code == 411:
        assert_problem(r, 411, "length_required")
    else:
        assert_problem(r, 403, "signature_mismatch")
    assert_nothing_stored(store, c, ta, up["attachment"]["id"], key_of(store, up["upload"]["url"]),
                          files_before)


def test_urls_bound_to_key_method_and_query(store):
    """Natter's URLs only do what they were signed for: the uploaded key without any
    query is 403 access_denied (GET and PUT, nothing overwritten); the download URL's
    query on the path /natter/att/../x is 400 invalid_key; the upload URL used for GET
    is 403 signature_mismatch; the download URL used for a PUT is 403 (access_denied: it
    signs no content-length/content-type, or signature_mismatch) and changes nothing."""
    c = store.client
    ((a, ta),), cid = group(store, 1)
    data = b"bound to its purpose\n"
    up = request_upload(c, ta, cid, "bound.txt", "text/plain", len(data), data=data)
    assert_status(put_upload(up["upload"], data), 200)
    att = complete(c, ta, up["attachment"]["id"])
    key = key_of(store, up["upload"]["url"])
    dl = download_info(c, ta, att["id"])["download"]["url"]
    bare = store.base_url + store.key_path(key)

    r = store_get(bare)
    assert_problem(r, 403, "access_denied")
    assert data not in r.content
    assert_problem(store_put(bare, b"x" * len(data), up["upload"]["headers"]), 403,
                   "access_denied")
    query = dl.split("?", 1)[1]
    r = raw_request(store.base_url, "GET", f"/{store.bucket}/att/../x?{query}")
    assert_problem(r, 400, "invalid_key")
    assert_problem(store_get(up["upload"]["url"]), 403, "signature_mismatch")
    r = store_put(dl, b"y" * len(data), up["upload"]["headers"])
    assert_problem(r, 403, {"access_denied", "signature_mismatch"})
    assert store_has(store, key) == data
    assert fetch_download(c, ta, att["id"]).content == data


def test_urls_expire(start_api):
    """With NATTER_UPLOAD_URL_TTL=10 and NATTER_DOWNLOAD_URL_TTL=10 the URLs carry
    X-Amz-Expires=10 and expires_at = X-Amz-Date + 10 s; once that passed, the upload URL
    is 403 url_expired and stores nothing (complete: 409 upload_missing), and the download
    URL is 403 url_expired, while a fresh download URL works."""
    store = start_store_api(start_api, NATTER_UPLOAD_URL_TTL=str(TTL_SHORT),
                            NATTER_DOWNLOAD_URL_TTL=str(TTL_SHORT))
    c = store.client
    ((a, ta),), cid = group(store, 1)
    data = b"expiring content\n" * 10
    done = upload_attachment(store.client, ta, cid, data, "kept.txt", "text/plain")
    late = request_upload(c, ta, cid, "late.txt", "text/plain", len(data), data=data)
    late_url = late["upload"]["url"]
    check_presigned(store, late_url, ttl=TTL_SHORT, signed_headers=SIGNED_PUT_HEADERS)
    assert_expires_at(late_url, late["upload"]["expires_at"], TTL_SHORT)
    dl = download_info(c, ta, done["id"])["download"]
    check_presigned(store, dl["url"], ttl=TTL_SHORT, signed_headers=None)
    assert_expires_at(dl["url"], dl["expires_at"], TTL_SHORT)
    files_before = blob_files(store)

    expiry = max(amz_date(late_url), amz_date(dl["url"])).timestamp() + TTL_SHORT + 1.5
    pause = expiry - time.time()
    assert pause <= TTL_SHORT + 5, f"URLs dated too far ahead ({pause:.1f} s)"
    time.sleep(max(0.0, pause))

    assert_problem(put_upload(late["upload"], data), 403, "url_expired")
    assert_nothing_stored(store, c, ta, late["attachment"]["id"], key_of(store, late_url),
                          files_before)
    assert_problem(store_get(dl["url"]), 403, "url_expired")
    fresh = fetch_download(c, ta, done["id"])
    assert fresh.content == data


# --------------------------------------------------------------------------- complete

def test_complete_rules(store):
    """Completing before the PUT is 409 upload_missing (still pending, and GET is 409
    attachment_not_uploaded); another member (not the uploader) and a non-member get 404
    attachment_not_found, as do an unknown uuid and a non-uuid id; after the PUT complete
    is 200 uploaded, and completing again is 200 with the same Attachment."""
    c = store.client
    ((a, ta), (b, tb), (d, td)), cid = group(store, 3)
    ((x, tx),) = new_users(c, 1, prefix="ax")
    data = b"complete me"
    up = request_upload(c, ta, cid, "c.txt", "text/plain", len(data), data=data)
    att_id = up["attachment"]["id"]
    assert_problem(complete_raw(c, ta, att_id), 409, "upload_missing")
    assert attachment_status(att_id) == "pending"
    assert_problem(download_raw(c, ta, att_id), 409, "attachment_not_uploaded")
    assert_status(put_upload(up["upload"], data), 200)
    assert_problem(complete_raw(c, tb, att_id), 404, "attachment_not_found")
    assert_problem(complete_raw(c, tx, att_id), 404, "attachment_not_found")
    assert_problem(complete_raw(c, ta, str(uuid.uuid4())), 404, "attachment_not_found")
    assert_problem(complete_raw(c, ta, "not-a-uuid"), 404, "attachment_not_found")
    assert attachment_status(att_id) == "pending"
    first = complete(c, ta, att_id)
    second = complete(c, ta, att_id)
    assert second == first


def test_complete_size_mismatch(store):
    """An object of another size under the attachment's key (PUT through a URL botocore
    signs with the store's own keys) makes complete 409 upload_size_mismatch and leaves
    the attachment pending; the store never replaces that object (natter's own URL with
    the declared bytes is then 409 object_exists). An object of the right size but other
    bytes makes complete 409 upload_digest_mismatch."""
    c = store.client
    ((a, ta),), cid = group(store, 1)
    data = b"exactly these bytes\n"
    up = request_upload(c, ta, cid, "size.txt", "text/plain", len(data), data=data)
    key = key_of(store, up["upload"]["url"])
    wrong = data + b"plus extra"
    url = presign(store, "PUT", key, ContentType="text/plain", ContentLength=len(wrong),
                  body=wrong)
    if "content-length" not in url_param(url, "X-Amz-SignedHeaders").split(";"):
        pytest.skip("this botocore does not sign content-length, which the store requires")
    assert_status(store_put(url, wrong, {"Content-Type": "text/plain"}), 200)
    assert_problem(complete_raw(c, ta, up["attachment"]["id"]), 409, "upload_size_mismatch")
    assert attachment_status(up["attachment"]["id"]) == "pending"
    assert_problem(put_upload(up["upload"], data), 409, "object_exists")
    assert store_has(store, key) == wrong

    up2 = request_upload(c, ta, cid, "digest.txt", "text/plain", len(data), data=data)
    key2 = key_of(store, up2["upload"]["url"])
    same_size = data.upper()
    url = presign(store, "PUT", key2, ContentType="text/plain", ContentLength=len(same_size),
                  body=same_size)
    assert_status(store_put(url, same_size, {"Content-Type": "text/plain"}), 200)
    assert_problem(complete_raw(c, ta, up2["attachment"]["id"]), 409, "upload_digest_mismatch")
    assert attachment_status(up2["attachment"]["id"]) == "pending"


def test_complete_store_unreachable(start_api):
    """When natter-api cannot reach an S3 object store (NATTER_S3_ENDPOINT names a port
    nobody listens on), complete is 503 service_unavailable with Retry-After and the
    attachment stays pending. (The embedded store is never reached over HTTP: see
    test_public_url.py.)"""
    dead = free_port()
    store = start_store_api(start_api, public_url=f"http://127.0.0.1:{dead}",
                            NATTER_S3_ENDPOINT=f"http://127.0.0.1:{dead}")
    c = store.client
    ((a, ta),), cid = group(store, 1)
    up = request_upload(c, ta, cid, "void.txt", "text/plain", 5)
    assert up["upload"]["url"].startswith(f"http://127.0.0.1:{dead}/natter/att/")
    r = complete_raw(c, ta, up["attachment"]["id"])
    assert_problem(r, 503, "service_unavailable")
    assert r.headers.get("Retry-After"), describe(r)
    assert attachment_status(up["attachment"]["id"]) == "pending"


# --------------------------------------------------------------------------- access

def test_download_members_only(store):
    """GET /v1/attachments/{id} (and ?redirect=1) is for members of the attachment's chat:
    a non-member gets 404 attachment_not_found (and cannot complete it), so does a member
    after being removed; an unknown uuid or a non-uuid id is 404; a pending attachment is
    409 attachment_not_uploaded."""
    c = store.client
    ((a, ta), (b, tb)), cid = group(store, 2)
    ((x, tx),) = new_users(c, 1, prefix="ax")
    att = upload_attachment(store.client, ta, cid, b"members only", "secret.txt", "text/plain")
    assert_status(download_raw(c, tb, att["id"]), 200)
    assert_problem(download_raw(c, tx, att["id"]), 404, "attachment_not_found")
    assert_problem(download_raw(c, tx, att["id"], redirect=True), 404, "attachment_not_found")
    assert_problem(complete_raw(c, tx, att["id"]), 404, "attachment_not_found")
    remove_member(c, ta, cid, b["id"])
    assert_problem(download_raw(c, tb, att["id"]), 404, "attachment_not_found")
    assert_problem(download_raw(c, ta, str(uuid.uuid4())), 404, "attachment_not_found")
    assert_problem(download_raw(c, ta, "12345"), 404, "attachment_not_found")
    pending = request_upload(c, ta, cid, "later.txt", "text/plain", 3)["attachment"]
    assert_problem(download_raw(c, ta, pending["id"]), 409, "attachment_not_uploaded")
    assert_problem(download_raw(c, ta, pending["id"], redirect=True), 409,
                   "attachment_not_uploaded")


def test_download_redirect_only_documented_values(store):
    """`redirect` takes only its documented value `1`: any other value (true, 0, yes,
    empty, 1 with junk) is 400 invalid_parameter naming the field, for a member and for
    anybody else alike (checked before the attachment is looked up); absent gives the
    JSON answer and `1` the 302."""
    c = store.client
    ((a, ta), (b, tb)), cid = group(store, 2)
    ((x, tx),) = new_users(c, 1, prefix="rx")
    att = upload_attachment(c, ta, cid, b"redirect values", "r.txt", "text/plain")
    path = f"/v1/attachments/{att['id']}"
    for value in ["true", "0", "yes", "", "2", "1x", "01", " 1"]:
        for tok in (tb, tx):
            r = c.get(path, params={"redirect": value}, token=tok)
            body = assert_problem(r, 400, "invalid_parameter")
            assert body.get("field") == "redirect", body
    assert_status(c.get(path, token=tb), 200)
    r = c.get(path, params={"redirect": "1"}, token=tb)
    assert_status(r, 302)
    assert r.headers.get("Location"), describe(r)


def test_upload_url_members_only(store):
    """A non-member asking for an upload URL gets 404 chat_not_found, like a chat that
    does not exist; no attachment row is created."""
    c = store.client
    ((a, ta),), cid = group(store, 1)
    ((x, tx),) = new_users(c, 1, prefix="ax")
    r = request_upload_raw(c, tx, cid, "intruder.txt", "text/plain", 10)
    assert_problem(r, 404, "chat_not_found")
    assert_problem(request_upload_raw(c, ta, missing_chat_id(), "x.txt", "text/plain", 1),
                   404, "chat_not_found")
    assert attachment_rows(cid) == 0


# --------------------------------------------------------------------------- validation

def test_upload_request_validation(store):
    """Bad upload requests are 422 and create nothing: filenames with '/', '\\' or
    control characters, empty, '.', '..', longer than 255 or not strings
    (validation_failed field=filename); content types that are not type/subtype of RFC
    6838 characters or longer than 100 (field=content_type); sizes that are negative or
    not integers (field=size); missing and unknown fields (validation_failed). A
    255-character filename is accepted."""
    c = store.client
    ((a, ta),), cid = group(store, 1)
    for bad in ("a/b", "a\\b", "", ".", "..", "tab\there", "bell\u0007", "x" * 256, 5, None):
        r = request_upload_raw(c, ta, cid, bad, "text/plain", 1)
        expect_problem(f"filename {bad!r}", r, 422, "validation_failed", "filename")
    for bad in ("image", "image/", "/png", "a/b/c", "text/plain; charset=utf-8",
                "text /plain", "", "a/" + "b" * 99, 7, None):
        r = request_upload_raw(c, ta, cid, "f.txt", bad, 1)
        expect_problem(f"content_type {bad!r}", r, 422, "validation_failed", "content_type")
    for bad in (-1, "5", 1.5, None, True):
        r = request_upload_raw(c, ta, cid, "f.txt", "text/plain", bad)
        expect_problem(f"size {bad!r}", r, 422, "validation_failed", "size")
    r = c.post(f"/v1/chats/{cid}/attachments", json={"content_type": "text/plain", "size": 1},
               token=ta)
    expect_problem("no filename", r, 422, "validation_failed", "filename")
    r = c.post(f"/v1/chats/{cid}/attachments", json={"filename": "f.txt", "size": 1},
               token=ta)
    expect_problem("no content_type", r, 422, "validation_failed", "content_type")
    r = c.post(f"/v1/chats/{cid}/attachments",
               json={"filename": "f.txt", "content_type": "text/plain"}, token=ta)
    expect_problem("no size", r, 422, "validation_failed", "size")
    r = request_upload_raw(c, ta, cid, "f.txt", "text/plain", 1, color="blue")
    expect_problem("unknown field", r, 422, "validation_failed")
    assert attachment_rows(cid) == 0
    ok = request_upload(c, ta, cid, "n" * 251 + ".txt", "text/plain", 1)
    assert ok["attachment"]["filename"] == "n" * 251 + ".txt"


def test_content_type_and_size_limits_default(store):
    """Default NATTER_ATTACHMENT_TYPES (image/*, video/*, audio/*, application/pdf,
    text/plain): those are accepted (case-insensitively, stored lowercase); others such as
    application/x-msdownload or text/html are 422 content_type_not_allowed
    (field=content_type). Default NATTER_ATTACHMENT_MAX_BYTES 104857600: that size is
    accepted, one byte more is 422 attachment_too_large (field=size, max_bytes)."""
    c = store.client
    ((a, ta),), cid = group(store, 1)
    for ok in ("image/png", "IMAGE/JPEG", "video/mp4", "audio/ogg", "application/pdf",
               "text/plain", "image/svg+xml"):
        att = request_upload(c, ta, cid, "f", ok, 1)["attachment"]
        assert att["content_type"] == ok.lower()
    created = attachment_rows(cid)
    for bad in ("application/x-msdownload", "text/html", "application/octet-stream",
                "application/pdfx"):
        r = request_upload_raw(c, ta, cid, "f.exe", bad, 1)
        expect_problem(bad, r, 422, "content_type_not_allowed", "content_type")
    r = request_upload_raw(c, ta, cid, "big.mp4", "video/mp4", DEFAULT_MAX_BYTES + 1)
    body = assert_problem(r, 422, "attachment_too_large", "size")
    assert body.get("max_bytes") == DEFAULT_MAX_BYTES, body
    assert attachment_rows(cid) == created
    att = request_upload(c, ta, cid, "big.mp4", "video/mp4", DEFAULT_MAX_BYTES)["attachment"]
    assert att["size"] == DEFAULT_MAX_BYTES


def test_content_type_and_size_limits_configured(start_api):
    """NATTER_ATTACHMENT_MAX_BYTES=1000 and NATTER_ATTACHMENT_TYPES=text/plain,
    application/x-natter-test,image/*: 1000 bytes are accepted, 1001 are 422
    attachment_too_large with max_bytes 1000; application/pdf (a default type) is now 422
    content_type_not_allowed, the listed types and the image/* wildcard are accepted."""
    store = start_store_api(start_api, NATTER_ATTACHMENT_MAX_BYTES="1000",
                            NATTER_ATTACHMENT_TYPES="text/plain,application/x-natter-test,image/*")
    c = store.client
    ((a, ta),), cid = group(store, 1)
    assert request_upload(c, ta, cid, "f.txt", "text/plain", 1000)["attachment"]["size"] == 1000
    body = assert_problem(request_upload_raw(c, ta, cid, "f.txt", "text/plain", 1001), 422,
                          "attachment_too_large", "size")
    assert body.get("max_bytes") == 1000, body
    assert_problem(request_upload_raw(c, ta, cid, "f.pdf", "application/pdf", 10), 422,
                   "content_type_not_allowed", "content_type")
    assert_problem(request_upload_raw(c, ta, cid, "f.mp4", "video/mp4", 10), 422,
                   "content_type_not_allowed", "content_type")
    for ok in ("application/x-natter-test", "image/webp"):
        assert request_upload(c, ta, cid, "f", ok, 10)["attachment"]["content_type"] == ok
    assert attachment_rows(cid) == 3


def test_message_attachment_refs_refused(store):
    """A message may only reference uploaded attachments of the same chat uploaded by the
    sender: another member's attachment, the sender's attachment of another chat, a
    pending one, or a list with one such among good ones is 422 validation_failed
    field=attachment_ids and changes nothing; the sender's own uploaded one is 201."""
    c = store.client
    ((a, ta), (b, tb)), cid = group(store, 2)
    other_cid = make_group(c, ta, "elsewhere", [b["id"]])["id"]
    mine = upload_attachment(store.client, ta, cid, b"mine", "mine.txt", "text/plain")
    theirs = upload_attachment(store.client, tb, cid, b"theirs", "theirs.txt", "text/plain")
    elsewhere = upload_attachment(store.client, ta, other_cid, b"elsewhere", "e.txt", "text/plain")
    pending = request_upload(c, ta, cid, "p.txt", "text/plain", 7)["attachment"]
    before = chat_snapshot(cid)
    for what, ids in (("another member's", [theirs["id"]]),
                      ("another chat's", [elsewhere["id"]]),
                      ("pending", [pending["id"]]),
                      ("one bad among good", [mine["id"], theirs["id"]])):
        r = send_raw(c, ta, cid, "look", attachment_ids=ids)
        expect_problem(what, r, 422, "validation_failed", "attachment_ids")
    assert chat_snapshot(cid) == before
    msg = send(c, ta, cid, "look", attachment_ids=[mine["id"]])
    assert msg["attachments"] == [ref(mine)]


# --------------------------------------------------------------------------- cleanup

def test_cleanup_deletes_stale_pending(private_redis, start_api, worker):
    """natter-worker's attachments_cleanup (NATTER_CLEANUP_INTERVAL=1, the server's S3
    settings) deletes pending attachments older than NATTER_ATTACHMENT_PENDING_TTL
    (default an hour; these are two hours old) — the stored object (signed
    DELETE: afterwards the key is 404 no_such_key and no file holds its bytes) and the row;
    a stale pending one that was never PUT goes too. An uploaded attachment of the same
    age and a fresh pending one are kept with their objects."""
    store = start_store_api(start_api, NATTER_REDIS_URL=private_redis.url)
    c = store.client
    ((a, ta),), cid = group(store, 1)
    stale_data = random_bytes(2048)
    stale = request_upload(c, ta, cid, "stale.bin", "application/pdf", len(stale_data), data=stale_data)
    assert_status(put_upload(stale["upload"], stale_data), 200)
    never = request_upload(c, ta, cid, "never.txt", "text/plain", 10)
    kept_data = random_bytes(1024)
    kept = upload_attachment(store.client, ta, cid, kept_data, "kept.bin", "application/pdf")
    fresh_data = random_bytes(512)
    fresh = request_upload(c, ta, cid, "fresh.bin", "application/pdf", len(fresh_data), data=fresh_data)
    assert_status(put_upload(fresh["upload"], fresh_data), 200)
    stale_key = key_of(store, stale["upload"]["url"])
    fresh_key = key_of(store, fresh["upload"]["url"])
    assert files_holding(store, stale_data), "the stale object is not on disk to begin with"
    stale_id, never_id = stale["attachment"]["id"], never["attachment"]["id"]
    for att_id in (stale_id, never_id, kept["id"]):
        backdate_attachment(att_id, "2 hours")

    w = worker(threads=1, NATTER_CLEANUP_INTERVAL="1", NATTER_REDIS_URL=private_redis.url,
               **store_worker_env(store))
    wait_for(lambda: attachment_status(stale_id) is None and attachment_status(never_id) is None,
             CLEANUP_WAIT, "the stale pending attachments' rows to be deleted")
    assert store_has(store, stale_key) is None
    assert files_holding(store, stale_data) == []
    w.wait_log(lambda objs: any(o.get("msg") == "periodic task done"
                                and o.get("task") == "attachments_cleanup" for o in objs),
               CLEANUP_WAIT, "an attachments_cleanup run to be logged")

    assert attachment_status(kept["id"]) == "uploaded"
    assert fetch_download(c, ta, kept["id"]).content == kept_data
    assert attachment_status(fresh["attachment"]["id"]) == "pending"
    assert store_has(store, fresh_key) == fresh_data
