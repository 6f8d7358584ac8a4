"""Messages: send (idempotent by client_msg_id), validation of text, mentions, replies and
attachments, edit, delete (tombstones), reactions, and history pagination by count and by
bytes (docs/CONTRACT.md, issue 3)."""
import json
import uuid

import pytest

from chatlib import (JSON_HEADERS, MAX_TEXT, PAGE_BYTE_BUDGET, chat_path, chat_snapshot, cmid,
                     delete_message_raw, edit_raw, events, get_chat,
                     get_message, get_message_raw, history_all, history_page,
                     history_page_raw, inbox_rows, last_seq_db, make_direct, make_group,
                     message_event_seqs, new_users, react_raw, send, send_raw, set_role)
from natterlib import RFC3339_UTC_RE, assert_problem, assert_status, psql, psql_int

THUMBS = "\U0001F44D"
HEART = "\u2764"


def group_of(client, n, title="g"):
    """n logged-in users and a group of them created by the first: (users, chat id)."""
    users = new_users(client, n)
    cid = make_group(client, users[0][1], title, [u["id"] for u, _ in users[1:]])["id"]
    return users, cid


def stored_count(chat_id, client_msg_id) -> int:
    return psql_int("SELECT count(*) FROM messages WHERE chat_id = $1 AND client_msg_id = $2",
                    chat_id, client_msg_id)


def post_raw_body(client, tok, chat_id, data: bytes):
    return client.post(chat_path(chat_id, "messages"), data=data, headers=JSON_HEADERS,
                       token=tok)


# --------------------------------------------------------------------------- send

def test_send(client):
    """Sending answers 201 with the full Message (sender, client_msg_id, kind text, no
    mentions/reply/attachments/reactions, times); seqs increase by one; GET returns the
    same Message; every member (sender included) gets one `message` inbox event."""
    ((a, ta), (b, tb)), cid = group_of(client, 2)
    mid = cmid()
    r = send_raw(client, ta, cid, "hello world", client_msg_id=mid)
    assert_status(r, 201)
    m = r.json()
    assert m["chat_id"] == cid and m["seq"] == 2
    assert m["sender_id"] == a["id"] and m["client_msg_id"] == mid
    assert m["kind"] == "text" and m["text"] == "hello world"
    assert m["mentions"] == [] and m["reply_to_seq"] is None
    assert m["attachment_ids"] == [] and m["reactions"] == []
    assert m["system"] is None
    assert RFC3339_UTC_RE.match(m["created_at"])
    assert m["edited_at"] is None and m["deleted_at"] is None
    m2 = send(client, tb, cid, "second")
    assert m2["seq"] == 3 and m2["sender_id"] == b["id"]
    assert get_message(client, tb, cid, 2) == m
    assert get_chat(client, ta, cid)["last_seq"] == 3
    for user in (a, b):
        rows = inbox_rows(user["id"])
        assert message_event_seqs(rows, cid) == [1, 2, 3]
        payload = events(rows, "message", cid)[1]
        assert payload["message"]["text"] == "hello world"
        assert payload["message"]["sender_id"] == a["id"]


def test_send_in_direct_chat(client):
    """Both sides of a direct chat can send; seqs increase by one and both see both."""
    (a, ta), (b, tb) = new_users(client, 2)
    cid = make_direct(client, ta, b["id"])["id"]
    m1 = send(client, ta, cid, "hi b")
    m2 = send(client, tb, cid, "hi a")
    assert m2["seq"] == m1["seq"] + 1
    texts = [m["text"] for m in history_all(client, ta, cid) if m["kind"] == "text"]
    assert texts == ["hi b", "hi a"]
    assert get_chat(client, tb, cid)["last_seq"] == m2["seq"]


def test_idempotent_retry(client):
    """A retry with the same client_msg_id and content answers 200 with the original
    Message (same seq, same times) and stores nothing new: no new seq, no new event."""
    ((a, ta), (b, _)), cid = group_of(client, 2)
    first = send(client, ta, cid, "once", mentions=[b["id"]], reply_to_seq=1)
    mid = first["client_msg_id"]
    for _ in range(2):
        r = send_raw(client, ta, cid, "once", client_msg_id=mid, mentions=[b["id"]],
                     reply_to_seq=1)
        assert_status(r, 200)
        assert r.json() == first
    assert last_seq_db(cid) == first["seq"]
    assert stored_count(cid, mid) == 1
    for user in (a, b):
        assert message_event_seqs(inbox_rows(user["id"]), cid).count(first["seq"]) == 1


@pytest.mark.parametrize("change", [
    {"text": "other text"},
    {"text": "once "},
    {"mentions": []},
    {"reply_to_seq": None},
    {"reply_to_seq": 2},
])
def test_idempotency_conflict(client, change):
    """The same client_msg_id with different content (text, mentions, reply_to_seq) is
    409 idempotency_conflict; nothing is stored and the original stays as it was."""
    ((a, ta), (b, _)), cid = group_of(client, 2)
    first = send(client, ta, cid, "once", mentions=[b["id"]], reply_to_seq=1)
    body = {"client_msg_id": first["client_msg_id"], "text": "once",
            "mentions": [b["id"]], "reply_to_seq": 1}
    body.update(change)
    body = {k: v for k, v in body.items() if v is not None}
    before = chat_snapshot(cid)
    r = client.post(chat_path(cid, "messages"), json=body, token=ta)
    assert_problem(r, 409, "idempotency_conflict")
    assert chat_snapshot(cid) == before
    assert get_message(client, ta, cid, first["seq"]) == first


def test_client_msg_id_scope(client):
    """client_msg_id is unique per sender and chat: another sender, or the same sender in
    another chat, may use the same id for a new message (201)."""
    ((a, ta), (b, tb)), cid = group_of(client, 2)
    other = make_group(client, ta, "other")["id"]
    mid = cmid()
    m1 = send(client, ta, cid, "same id", client_msg_id=mid)
    m2 = send(client, tb, cid, "same id", client_msg_id=mid)
    m3 = send(client, ta, other, "same id", client_msg_id=mid)
    assert m2["seq"] == m1["seq"] + 1 and m2["sender_id"] == b["id"]
    assert m3["chat_id"] == other
    assert stored_count(cid, mid) == 2


@pytest.mark.parametrize("value", ["not-a-uuid", "", "12345678-1234-1234-1234-12345678901",
                                   "g2345678-1234-1234-1234-123456789012", 12345, None,
                                   ["c56a4180-65aa-42ec-a945-5fd21dec0538"]])
def test_invalid_client_msg_id(client, value):
    """A client_msg_id that is missing or not a UUID string is 422 validation_failed
    field=client_msg_id; nothing is stored."""
    ((_, ta),), cid = group_of(client, 1)
    body = {"text": "hello"}
    if value is not None:
        body["client_msg_id"] = value
    before = chat_snapshot(cid)
    r = client.post(chat_path(cid, "messages"), json=body, token=ta)
    assert_problem(r, 422, "validation_failed", field="client_msg_id")
    assert chat_snapshot(cid) == before
    assert get_chat(client, ta, cid)["last_seq"] == 1


def test_text_of_max_length_accepted(client):
    """A text of exactly 100,000 characters (multi-byte ones counted as one) is stored and
    returned unchanged."""
    ((_, ta),), cid = group_of(client, 1)
    text = ("\u00e9" * 40_000) + ("a" * 39_999) + ("\U0001F600" * 20_000) + "z"
    assert len(text) == MAX_TEXT
    m = send(client, ta, cid, text)
    assert m["text"] == text
    assert get_message(client, ta, cid, m["seq"])["text"] == text
    assert psql_int("SELECT char_length(body) FROM messages WHERE chat_id = $1 AND seq = $2",
                    cid, m["seq"]) == MAX_TEXT
    # the same text sent as raw UTF-8 rather than \u escapes
    data = json.dumps({"client_msg_id": cmid(), "text": text}, ensure_ascii=False)
    r = post_raw_body(client, ta, cid, data.encode("utf-8"))
    assert_status(r, 201)
    assert r.json()["text"] == text and r.json()["seq"] == m["seq"] + 1


@pytest.mark.parametrize("text", ["a" * (MAX_TEXT + 1), "\u00e9" * (MAX_TEXT + 1), "", 42,
                                  None, ["a"], {"t": "a"}, True],
                         ids=["100001-ascii", "100001-latin1", "empty", "int", "null", "list",
                              "object", "bool"])
def test_invalid_text(client, text):
    """Text longer than 100,000 characters, empty, null or not a string is 422
    validation_failed field=text; nothing is stored."""
    ((_, ta),), cid = group_of(client, 1)
    before = chat_snapshot(cid)
    r = client.post(chat_path(cid, "messages"), json={"client_msg_id": cmid(), "text": text},
                    token=ta)
    assert_problem(r, 422, "validation_failed", field="text")
    assert chat_snapshot(cid) == before
    assert get_chat(client, ta, cid)["last_seq"] == 1


def test_missing_text(client):
    """A message without text is 422 validation_failed field=text."""
    ((_, ta),), cid = group_of(client, 1)
    r = client.post(chat_path(cid, "messages"), json={"client_msg_id": cmid()}, token=ta)
    assert_problem(r, 422, "validation_failed", field="text")
    assert get_chat(client, ta, cid)["last_seq"] == 1


@pytest.mark.parametrize("raw", [
    b'{"client_msg_id":"%s","text":"nul \\u0000 inside"}',
    b'{"client_msg_id":"%s","text":"\\u0000"}',
    b'{"client_msg_id":"%s","text":"bad \xff\xfe bytes"}',
    b'{"client_msg_id":"%s","text":"overlong \xc0\xaf"}',
    b'{"client_msg_id":"%s","text":"cut \xe2\x82"}',
    b'{"client_msg_id":"%s","text":"surrogate \xed\xa0\x80"}',
    b'{"client_msg_id":"%s","text":"lone \\ud800 escape"}',
    b'{"client_msg_id":"%s","text":"unterminated',
    b'{"client_msg_id":"%s","text":"a"} trailing',
])
def test_malformed_text(client, raw):
    """A NUL (\\u0000), invalid UTF-8 bytes, a lone surrogate or broken JSON in the body is
    400 malformed_json; nothing is stored."""
    ((_, ta),), cid = group_of(client, 1)
    before = chat_snapshot(cid)
    r = post_raw_body(client, ta, cid, raw.replace(b"%s", cmid().encode()))
    assert_problem(r, 400, "malformed_json")
    assert chat_snapshot(cid) == before
    assert get_chat(client, ta, cid)["last_seq"] == 1


def test_body_too_large(client):
    """A send body past 2 MiB is 413 payload_too_large; nothing is stored."""
    ((_, ta),), cid = group_of(client, 1)
    data = json.dumps({"client_msg_id": cmid(), "text": "x" * (2 * 1024 * 1024 + 1)}).encode()
    before = chat_snapshot(cid)
    r = post_raw_body(client, ta, cid, data)
    assert_problem(r, 413, "payload_too_large")
    assert chat_snapshot(cid) == before


def test_wrong_content_type(client):
    """A send body not declared as application/json is 415 unsupported_media_type; nothing
    is stored."""
    ((_, ta),), cid = group_of(client, 1)
    data = json.dumps({"client_msg_id": cmid(), "text": "plain"}).encode()
    before = chat_snapshot(cid)
    r = client.post(chat_path(cid, "messages"), data=data,
                    headers={"Content-Type": "text/plain"}, token=ta)
    assert_problem(r, 415, "unsupported_media_type")
    assert chat_snapshot(cid) == before


def test_unknown_field_refused(client):
    """An unknown member in the send body is 422 validation_failed naming it."""
    ((_, ta),), cid = group_of(client, 1)
    r = client.post(chat_path(cid, "messages"),
                    json={"client_msg_id": cmid(), "text": "x", "sender_id": 1}, token=ta)
    assert_problem(r, 422, "validation_failed", field="sender_id")
    assert get_chat(client, ta, cid)["last_seq"] == 1


def test_mentions(client):
    """Mentions of members are stored; mentioning a non-member or an unknown id, more than
    100 ids, or ill-typed values is 422 validation_failed field=mentions and stores
    nothing."""
    ((a, ta), (b, _)), cid = group_of(client, 2)
    (x, _), = new_users(client, 1)
    m = send(client, ta, cid, "hi @b", mentions=[b["id"]])
    assert m["mentions"] == [b["id"]]
    before = chat_snapshot(cid)
    for bad in ([x["id"]], [b["id"], x["id"]], [9_000_000_000_000],
                list(range(1, 102)), ["b"], "b", [1.5]):
        r = send_raw(client, ta, cid, "hi", mentions=bad)
        assert_problem(r, 422, "validation_failed", field="mentions")
    assert chat_snapshot(cid) == before


def test_reply_to_seq(client):
    """reply_to_seq naming an existing message is stored; a seq that does not exist (or
    is not an integer) is 422 validation_failed field=reply_to_seq and stores nothing."""
    ((a, ta), (b, tb)), cid = group_of(client, 2)
    first = send(client, ta, cid, "question")
    reply = send(client, tb, cid, "answer", reply_to_seq=first["seq"])
    assert reply["reply_to_seq"] == first["seq"]
    before = chat_snapshot(cid)
    for bad in (reply["seq"] + 1, reply["seq"] + 1000, 0, -1, "2", 1.5):
        r = send_raw(client, tb, cid, "answer", reply_to_seq=bad)
        assert_problem(r, 422, "validation_failed", field="reply_to_seq")
    assert chat_snapshot(cid) == before


def test_attachment_ids_validation(client):
    """attachment_ids that are not uploaded attachments of this chat by the sender (a
    random uuid), not uuids, or more than 10 are 422 validation_failed
    field=attachment_ids; nothing is stored."""
    ((_, ta),), cid = group_of(client, 1)
    before = chat_snapshot(cid)
    for bad in ([str(uuid.uuid4())], ["not-a-uuid"], [str(uuid.uuid4()) for _ in range(11)],
                "x", [7]):
        r = send_raw(client, ta, cid, "see attached", attachment_ids=bad)
        assert_problem(r, 422, "validation_failed", field="attachment_ids")
    assert chat_snapshot(cid) == before


def test_attachment_ids_empty_list_ok(client):
    """An empty attachment_ids list is accepted."""
    ((_, ta),), cid = group_of(client, 1)
    assert send(client, ta, cid, "nothing attached", attachment_ids=[])["attachment_ids"] == []


# --------------------------------------------------------------------------- edit / delete

def test_edit(client):
    """The sender edits a message: 200 with the new text and edited_at set, an `edit`
    inbox event for every member; another member (even the owner), a system message, an
    empty text or a missing seq are refused and change nothing."""
    ((a, ta), (b, tb)), cid = group_of(client, 2)
    m = send(client, tb, cid, "tpyo")
    r = edit_raw(client, tb, cid, m["seq"], "typo")
    assert_status(r, 200)
    edited = r.json()
    assert edited["seq"] == m["seq"] and edited["text"] == "typo"
    assert RFC3339_UTC_RE.match(edited["edited_at"])
    assert edited["created_at"] == m["created_at"]
    assert get_message(client, ta, cid, m["seq"])["text"] == "typo"
    for user in (a, b):
        got = events(inbox_rows(user["id"]), "edit", cid)
        assert [(p["message"]["seq"], p["message"]["text"]) for p in got] == [
            (m["seq"], "typo")], got

    before = chat_snapshot(cid)
    assert_problem(edit_raw(client, ta, cid, m["seq"], "owner rewrites"), 403, "forbidden")
    assert_problem(edit_raw(client, ta, cid, 1, "rewrite history"), 403, "forbidden")
    assert_problem(edit_raw(client, tb, cid, m["seq"], ""), 422, "validation_failed",
                   field="text")
    assert_problem(edit_raw(client, tb, cid, m["seq"], "x" * (MAX_TEXT + 1)), 422,
                   "validation_failed", field="text")
    assert_problem(edit_raw(client, tb, cid, m["seq"] + 50, "nope"), 404, "message_not_found")
    assert chat_snapshot(cid) == before


def test_delete_leaves_tombstone(client):
    """The sender deletes a message: 204 without body; the message stays as a tombstone
    (text null, mentions/attachments/reactions emptied, deleted_at set) in GET and
    history; every member gets one `delete` event; deleting again is 204 with no new
    event; a missing seq is 404 message_not_found."""
    ((a, ta), (b, tb)), cid = group_of(client, 2)
    m = send(client, ta, cid, "regret", mentions=[b["id"]])
    after = send(client, tb, cid, "later")
    assert_status(react_raw(client, tb, cid, m["seq"], THUMBS), 200)
    r = delete_message_raw(client, ta, cid, m["seq"])
    assert_status(r, 204)
    assert r.content == b""
    gone = get_message(client, tb, cid, m["seq"])
    assert gone["text"] is None and gone["mentions"] == [] and gone["attachment_ids"] == []
    assert gone["reactions"] == []
    assert RFC3339_UTC_RE.match(gone["deleted_at"])
    assert gone["seq"] == m["seq"] and gone["sender_id"] == a["id"]
    assert psql_int("SELECT count(*) FROM reactions WHERE chat_id = $1 AND seq = $2",
                    cid, m["seq"]) == 0
    assert psql("SELECT body IS NULL FROM messages WHERE chat_id = $1 AND seq = $2",
                cid, m["seq"]) == "t"
    hist = history_all(client, tb, cid)
    assert [x["seq"] for x in hist] == [1, m["seq"], after["seq"]]
    assert hist[1]["text"] is None and hist[1]["deleted_at"]

    def delete_events(user):
        return [p for p in events(inbox_rows(user["id"]), "delete", cid)]

    for user in (a, b):
        assert [(p["chat_id"], p["seq"]) for p in delete_events(user)] == [(cid, m["seq"])]
    r = delete_message_raw(client, ta, cid, m["seq"])
    assert_status(r, 204)
    for user in (a, b):
        assert len(delete_events(user)) == 1
    assert_problem(delete_message_raw(client, ta, cid, after["seq"] + 10), 404,
                   "message_not_found")
    assert get_chat(client, ta, cid)["last_seq"] == after["seq"]


def test_delete_permissions(client):
    """A plain member cannot delete another's message (403, nothing changes); the owner
    and an admin of a group can; anyone can delete their own; in a direct chat the other
    side cannot delete my message."""
    users, cid = group_of(client, 4)
    (a, ta), (b, tb), (c, tc), (d, td) = users
    set_role(client, ta, cid, b["id"], "admin")
    m1 = send(client, tc, cid, "c one")
    m2 = send(client, tc, cid, "c two")
    m3 = send(client, td, cid, "d own")
    before = chat_snapshot(cid)
    assert_problem(delete_message_raw(client, td, cid, m1["seq"]), 403, "forbidden")
    assert_problem(delete_message_raw(client, tc, cid, 1), 403, "forbidden")
    assert chat_snapshot(cid) == before
    assert_status(delete_message_raw(client, tb, cid, m1["seq"]), 204)
    assert_status(delete_message_raw(client, ta, cid, m2["seq"]), 204)
    assert_status(delete_message_raw(client, td, cid, m3["seq"]), 204)
    for m in (m1, m2, m3):
        assert get_message(client, tc, cid, m["seq"])["deleted_at"] is not None

    did = make_direct(client, ta, b["id"])["id"]
    dm = send(client, ta, did, "mine")
    before = chat_snapshot(did)
    assert_problem(delete_message_raw(client, tb, did, dm["seq"]), 403, "forbidden")
    assert chat_snapshot(did) == before


def test_tombstone_cannot_be_edited_or_reacted_to(client):
    """Editing or reacting to a deleted message is 409 message_deleted; it stays a
    tombstone."""
    ((a, ta), (b, tb)), cid = group_of(client, 2)
    m = send(client, ta, cid, "gone soon")
    assert_status(delete_message_raw(client, ta, cid, m["seq"]), 204)
    before = chat_snapshot(cid)
    assert_problem(edit_raw(client, ta, cid, m["seq"], "back"), 409, "message_deleted")
    assert_problem(react_raw(client, tb, cid, m["seq"], THUMBS), 409, "message_deleted")
    assert_problem(react_raw(client, tb, cid, m["seq"], THUMBS, "DELETE"), 409,
                   "message_deleted")
    assert chat_snapshot(cid) == before
    assert get_message(client, tb, cid, m["seq"])["text"] is None


# --------------------------------------------------------------------------- reactions

def test_reactions(client):
    """PUT adds my reaction (200 summary with count and `me`), again is idempotent; another
    user's reaction raises the count; the summary is sorted by emoji and `me` is per
    caller; DELETE removes mine (idempotent); every member gets `reaction` events."""
    ((a, ta), (b, tb), (c, tc)), cid = group_of(client, 3)
    m = send(client, tc, cid, "react to me")
    seq = m["seq"]
    r = react_raw(client, ta, cid, seq, THUMBS)
    assert_status(r, 200)
    assert r.json() == {"reactions": [{"emoji": THUMBS, "count": 1, "me": True}]}
    r = react_raw(client, ta, cid, seq, THUMBS)
    assert_status(r, 200)
    assert r.json() == {"reactions": [{"emoji": THUMBS, "count": 1, "me": True}]}
    r = react_raw(client, tb, cid, seq, THUMBS)
    assert r.json() == {"reactions": [{"emoji": THUMBS, "count": 2, "me": True}]}
    r = react_raw(client, tb, cid, seq, HEART)
    assert r.json() == {"reactions": [{"emoji": HEART, "count": 1, "me": True},
                                      {"emoji": THUMBS, "count": 2, "me": True}]}
    assert get_message(client, ta, cid, seq)["reactions"] == [
        {"emoji": HEART, "count": 1, "me": False}, {"emoji": THUMBS, "count": 2, "me": True}]
    assert get_message(client, tc, cid, seq)["reactions"] == [
        {"emoji": HEART, "count": 1, "me": False}, {"emoji": THUMBS, "count": 2, "me": False}]

    for _ in range(2):
        r = react_raw(client, ta, cid, seq, THUMBS, "DELETE")
        assert_status(r, 200)
        assert r.json() == {"reactions": [{"emoji": HEART, "count": 1, "me": False},
                                          {"emoji": THUMBS, "count": 1, "me": False}]}
    r = react_raw(client, tc, cid, seq, "\U0001F389", "DELETE")     # never added
    assert_status(r, 200)
    assert psql_int("SELECT count(*) FROM reactions WHERE chat_id = $1 AND seq = $2",
                    cid, seq) == 2

    got = events(inbox_rows(c["id"]), "reaction", cid)
    summary = [(p["seq"], p["user_id"], p["emoji"], p["action"]) for p in got]
    assert (seq, a["id"], THUMBS, "added") in summary
    assert (seq, b["id"], HEART, "added") in summary
    assert (seq, a["id"], THUMBS, "removed") in summary
    assert summary.count((seq, a["id"], THUMBS, "added")) == 1
    assert summary.count((seq, a["id"], THUMBS, "removed")) == 1


@pytest.mark.parametrize("emoji", ["a" * 33, "\U0001F600" * 33, "a b", "tab\t", "nl\n",
                                   "bell\x07", " ", "\u00a0", "a", "+1", ":party:",
                                   "\U0001F600\U0001F600", "\U0001F1EB", "\u200d\U0001F4BB",
                                   "\U0001F469\u200d"],
                         ids=["33-ascii", "33-emoji", "space", "tab", "newline", "bell",
                              "only-space", "no-break-space", "letter", "plus-one", "shortcode",
                              "two-emoji", "half-flag", "leading-zwj", "trailing-zwj"])
def test_invalid_emoji(client, emoji):
    """A reaction is exactly one emoji (with its modifiers, variation selector, ZWJ sequence
    or tags), bounded: letters, shortcodes, spaces (also U+00A0), control characters, two
    emoji, half a flag or a dangling ZWJ are 422 validation_failed field=emoji; nothing
    changes."""
    ((_, ta),), cid = group_of(client, 1)
    m = send(client, ta, cid, "x")
    before = chat_snapshot(cid)
    assert_problem(react_raw(client, ta, cid, m["seq"], emoji), 422, "validation_failed",
                   field="emoji")
    assert chat_snapshot(cid) == before


@pytest.mark.parametrize("emoji", ["\U0001F600", "\U0001F44D\U0001F3FD",
                                   "\U0001F469\u200D\U0001F4BB", "\u2764\ufe0f",
                                   "\U0001F1EB\U0001F1F7", "1\ufe0f\u20e3",
                                   "\U0001F3F4\U000E0067\U000E0062\U000E0065\U000E006E"
                                   "\U000E0067\U000E007F"],
                         ids=["emoji", "skin-tone", "zwj-sequence", "variation-selector", "flag",
                              "keycap", "tag-flag"])
def test_valid_emoji(client, emoji):
    """One emoji — with a skin tone, a variation selector, as a ZWJ sequence, a flag, a
    keycap or a tag sequence — is accepted and returned unchanged."""
    ((_, ta),), cid = group_of(client, 1)
    m = send(client, ta, cid, "x")
    r = react_raw(client, ta, cid, m["seq"], emoji)
    assert_status(r, 200)
    assert r.json() == {"reactions": [{"emoji": emoji, "count": 1, "me": True}]}


def test_reaction_on_missing_message(client):
    """Reacting to a seq that does not exist is 404 message_not_found."""
    ((_, ta),), cid = group_of(client, 1)
    assert_problem(react_raw(client, ta, cid, 99, THUMBS), 404, "message_not_found")
    assert_problem(react_raw(client, ta, cid, 99, THUMBS, "DELETE"), 404, "message_not_found")


def test_get_missing_message(client):
    """GET of a seq that does not exist is 404 message_not_found."""
    ((_, ta),), cid = group_of(client, 1)
    assert_problem(get_message_raw(client, ta, cid, 2), 404, "message_not_found")


# --------------------------------------------------------------------------- history

@pytest.fixture
def busy_chat(client):
    """A group of 2 with 30 text messages after the `created` one (seqs 2..31), five of
    them deleted (5, 6, 17, 30, 31): (users, chat id, deleted seqs)."""
    users, cid = group_of(client, 2)
    (_, ta), (_, tb) = users
    for i in range(30):
        send(client, ta if i % 2 == 0 else tb, cid, f"message {i + 2}")
    deleted = [5, 6, 17, 30, 31]
    for seq in deleted:
        tok = ta if seq % 2 == 0 else tb
        assert_status(delete_message_raw(client, tok, cid, seq), 204)
    return users, cid, deleted


@pytest.mark.parametrize("direction", ["backward", "forward"])
@pytest.mark.parametrize("limit", [1, 7, 30, 31, None, 100])
def test_history_walks_everything(client, busy_chat, direction, limit):
    """Walking the history with before/prev_cursor (backward) or after/next_cursor
    (forward) returns every seq 1..31 exactly once, tombstones included."""
    users, cid, deleted = busy_chat
    msgs = history_all(client, users[1][1], cid, direction, limit=limit)
    assert [m["seq"] for m in msgs] == list(range(1, 32))
    for m in msgs:
        if m["seq"] in deleted:
            assert m["text"] is None and m["deleted_at"] is not None
        elif m["seq"] > 1:
            assert m["text"] == f"message {m['seq']}"


def test_history_pages(client, busy_chat):
    """Pages: the newest by default (default limit 50), `before` gives the newest older
    ones, `after` the oldest newer ones, and the cursors are null at the ends."""
    users, cid, _ = busy_chat
    tok = users[0][1]
    page = history_page(client, tok, cid)
    assert [m["seq"] for m in page["messages"]] == list(range(1, 32))
    assert page["prev_cursor"] is None and page["next_cursor"] is None
    page = history_page(client, tok, cid, limit=3)
    assert [m["seq"] for m in page["messages"]] == [29, 30, 31]
    assert page["next_cursor"] is None and page["prev_cursor"] is not None
    page = history_page(client, tok, cid, before=10, limit=3)
    assert [m["seq"] for m in page["messages"]] == [7, 8, 9]
    assert page["prev_cursor"] is not None and page["next_cursor"] is not None
    page = history_page(client, tok, cid, after=10, limit=3)
    assert [m["seq"] for m in page["messages"]] == [11, 12, 13]
    page = history_page(client, tok, cid, before=3, limit=10)
    assert [m["seq"] for m in page["messages"]] == [1, 2]
    assert page["prev_cursor"] is None
    page = history_page(client, tok, cid, after=28, limit=10)
    assert [m["seq"] for m in page["messages"]] == [29, 30, 31]
    assert page["next_cursor"] is None
    assert history_page(client, tok, cid, after=31)["messages"] == []
    assert history_page(client, tok, cid, before=1)["messages"] == []


@pytest.mark.parametrize("params", [
    {"limit": "0"}, {"limit": "101"}, {"limit": "-1"}, {"limit": "x"}, {"limit": "2.5"},
    {"before": "x"}, {"before": "-1"}, {"before": "1.5"}, {"after": "x"}, {"after": "-3"},
    {"after": "99999999999999999999999"}, {"before": "5", "after": "2"},
    {"before": "5", "after": "2", "limit": "10"},
])
def test_history_bad_parameters(client, params):
    """before and after together, non-integer or negative cursors and a limit outside
    1..100 are 400 invalid_parameter."""
    ((_, ta),), cid = group_of(client, 1)
    r = history_page_raw(client, ta, cid, **params)
    assert_problem(r, 400, "invalid_parameter")


def test_history_byte_budget(client):
    """15 texts of 100,000 characters: a page of limit=50 ends early once its text passes
    1 MiB (prev_cursor says where to go on), and walking with the cursors in either
    direction still returns every message exactly once."""
    ((_, ta),), cid = group_of(client, 1)
    seqs = [send(client, ta, cid, chr(ord("a") + i) * MAX_TEXT)["seq"] for i in range(15)]
    assert seqs == list(range(2, 17))
    page = history_page(client, ta, cid, limit=50)
    got = [m["seq"] for m in page["messages"]]
    big = [m for m in page["messages"] if m["kind"] == "text"]
    assert 1 <= len(big) < 15, f"page of {len(big)} big texts: {got}"
    assert got == list(range(17 - len(got), 17)), got      # the newest ones
    # the budget may be passed by the message that crosses it, not by more
    sizes = [len(m["text"].encode()) for m in big]
    assert sum(sizes) - min(sizes) <= PAGE_BYTE_BUDGET
    assert page["prev_cursor"] is not None and page["next_cursor"] is None
    for direction in ("backward", "forward"):
        msgs = history_all(client, ta, cid, direction, limit=50)
        assert [m["seq"] for m in msgs] == list(range(1, 17)), direction
        for m in msgs[1:]:
            assert m["text"] == chr(ord("a") + m["seq"] - 2) * MAX_TEXT
