"""Helpers of the chat, member, message and receipt API tests (docs/CONTRACT.md, issue 3).

Plain functions over natterlib's Client; nothing here talks to a server or a database at
import time, so `pytest --collect-only` works without an environment. Every helper that
expects success asserts the status and returns the parsed body; the `*_raw` variants return
the Response for tests that look at errors.

Database checks (psql) read the schema of migrations/001_initial.sql: chats, chat_members,
messages, reactions, inbox, users.inbox_seq.
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from urllib.parse import quote

import pytest

from natterlib import (Client, assert_status, describe, new_account, psql, psql_int, register,
                       unique_username)

CHATS = "/v1/chats"
JSON_HEADERS = {"Content-Type": "application/json"}
MAX_MEMBERS = 100
MAX_TEXT = 100_000
PAGE_BYTE_BUDGET = 1024 * 1024      # history pages end early once their text passes this
THREAD_JOIN_TIMEOUT = 60            # seconds, the whole of a concurrency test's threads


# --------------------------------------------------------------------------- paths

def chat_path(chat_id, *rest) -> str:
    """/v1/chats/{chat_id}/rest..."""
    return "/".join([CHATS, str(chat_id), *map(str, rest)])


def emoji_path(chat_id, seq, emoji: str) -> str:
    return chat_path(chat_id, "messages", seq, "reactions", quote(emoji, safe=""))


def cmid() -> str:
    """A fresh client_msg_id."""
    return str(uuid.uuid4())


# --------------------------------------------------------------------------- users

def new_user(client: Client, display_name: str | None = None, prefix: str = "c"):
    """A registered, logged-in user: (User dict, access token)."""
    acct = new_account(client, display_name=display_name, prefix=prefix)
    return acct.user, acct.token


def new_users(client: Client, n: int, prefix: str = "c"):
    """n logged-in users: [(User, token)]."""
    return [new_user(client, prefix=prefix) for _ in range(n)]


def bare_users(client: Client, n: int, prefix: str = "m") -> list[dict]:
    """n registered users that never log in (to fill groups): [User]."""
    return [register(client, unique_username(prefix)) for _ in range(n)]


def clone(client: Client) -> Client:
    """A new Client (own HTTP session) on the same server, for another thread."""
    return Client(client.base_url, client.spec)


# --------------------------------------------------------------------------- chats

def create_chat_raw(client: Client, tok: str, body: dict):
    return client.post(CHATS, json=body, token=tok)


def make_direct(client: Client, tok: str, other_id: int, expect=(201,)) -> dict:
    """POST a direct chat with other_id; asserts the status is in `expect`; the Chat."""
    r = create_chat_raw(client, tok, {"kind": "direct", "user_id": other_id})
    assert_status(r, *((expect,) if isinstance(expect, int) else expect))
    return r.json()


def make_group(client: Client, tok: str, title: str = "a group", member_ids=()) -> dict:
    """POST a group chat (asserting 201); the Chat."""
    r = create_chat_raw(client, tok, {"kind": "group", "title": title,
                                      "member_ids": list(member_ids)})
    assert_status(r, 201)
    return r.json()


def get_chat(client: Client, tok: str, chat_id) -> dict:
    r = client.get(chat_path(chat_id), token=tok)
    assert_status(r, 200)
    return r.json()


def list_chats_page(client: Client, tok: str, **params) -> dict:
    r = client.get(CHATS, token=tok, params=params or None)
    assert_status(r, 200)
    return r.json()


def list_chats_all(client: Client, tok: str, limit: int | None = None,
                   max_pages: int = 200) -> list[dict]:
    """Every chat of the caller, following next_cursor; asserts no chat repeats."""
    out, cursor = [], None
    for _ in range(max_pages):
        params = {}
        if limit is not None:
            params["limit"] = limit
        if cursor is not None:
            params["cursor"] = cursor
        page = list_chats_page(client, tok, **params)
        if limit is not None:
            assert len(page["chats"]) <= limit, page
        out += page["chats"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    else:
        pytest.fail(f"chat list did not end within {max_pages} pages")
    ids = [c["id"] for c in out]
    assert len(ids) == len(set(ids)), f"a chat appears twice while paging: {ids}"
    return out


def chat_ids_of(client: Client, tok: str) -> list[int]:
    return [c["id"] for c in list_chats_all(client, tok, limit=100)]


# --------------------------------------------------------------------------- members

def members(client: Client, tok: str, chat_id) -> list[dict]:
    r = client.get(chat_path(chat_id, "members"), token=tok)
    assert_status(r, 200)
    return r.json()["members"]


def roles(client: Client, tok: str, chat_id) -> dict:
    """{user id: role} of the chat."""
    return {m["user"]["id"]: m["role"] for m in members(client, tok, chat_id)}


def add_members_raw(client: Client, tok: str, chat_id, user_ids):
    return client.post(chat_path(chat_id, "members"), json={"user_ids": list(user_ids)},
                       token=tok)


def add_members(client: Client, tok: str, chat_id, user_ids) -> list[dict]:
    r = add_members_raw(client, tok, chat_id, user_ids)
    assert_status(r, 200)
    return r.json()["members"]


def remove_member_raw(client: Client, tok: str, chat_id, user_id):
    return client.delete(chat_path(chat_id, "members", user_id), token=tok)


def remove_member(client: Client, tok: str, chat_id, user_id):
    r = remove_member_raw(client, tok, chat_id, user_id)
    assert_status(r, 204)
    assert r.content == b""


def set_role_raw(client: Client, tok: str, chat_id, user_id, role):
    return client.patch(chat_path(chat_id, "members", user_id), json={"role": role},
                        token=tok)


def set_role(client: Client, tok: str, chat_id, user_id, role) -> dict:
    r = set_role_raw(client, tok, chat_id, user_id, role)
    assert_status(r, 200)
    return r.json()


# --------------------------------------------------------------------------- messages

def send_raw(client: Client, tok: str, chat_id, text="hello", *, client_msg_id=None, **kw):
    """POST a message (client_msg_id: a fresh uuid4 unless given); the Response.
    Extra keywords (mentions, reply_to_seq, attachment_ids, ...) go into the body."""
    body = {"client_msg_id": client_msg_id or cmid(), "text": text}
    body.update(kw)
    return client.post(chat_path(chat_id, "messages"), json=body, token=tok)


def send(client: Client, tok: str, chat_id, text="hello", *, client_msg_id=None,
         expect=201, **kw) -> dict:
    """POST a message, asserting `expect` (201); the Message."""
    r = send_raw(client, tok, chat_id, text, client_msg_id=client_msg_id, **kw)
    assert_status(r, expect)
    msg = r.json()
    assert msg["chat_id"] == int(chat_id), describe(r)
    return msg


def get_message_raw(client: Client, tok: str, chat_id, seq):
    return client.get(chat_path(chat_id, "messages", seq), token=tok)


def get_message(client: Client, tok: str, chat_id, seq) -> dict:
    r = get_message_raw(client, tok, chat_id, seq)
    assert_status(r, 200)
    return r.json()


def edit_raw(client: Client, tok: str, chat_id, seq, text):
    return client.patch(chat_path(chat_id, "messages", seq), json={"text": text}, token=tok)


def delete_message_raw(client: Client, tok: str, chat_id, seq):
    return client.delete(chat_path(chat_id, "messages", seq), token=tok)


def react_raw(client: Client, tok: str, chat_id, seq, emoji, method="PUT"):
    return client.request(method, emoji_path(chat_id, seq, emoji), token=tok)


def read_raw(client: Client, tok: str, chat_id, seq):
    return client.post(chat_path(chat_id, "read"), json={"seq": seq}, token=tok)


def read(client: Client, tok: str, chat_id, seq) -> dict:
    r = read_raw(client, tok, chat_id, seq)
    assert_status(r, 200)
    return r.json()


def receipts(client: Client, tok: str, chat_id) -> dict:
    """{user id: Receipt} of the chat."""
    r = client.get(chat_path(chat_id, "receipts"), token=tok)
    assert_status(r, 200)
    rows = r.json()["receipts"]
    ids = [x["user_id"] for x in rows]
    assert ids == sorted(ids), f"receipts not ordered by user id: {ids}"
    return {x["user_id"]: x for x in rows}


def history_page_raw(client: Client, tok: str, chat_id, **params):
    return client.get(chat_path(chat_id, "messages"), token=tok, params=params or None)


def history_page(client: Client, tok: str, chat_id, **params) -> dict:
    r = history_page_raw(client, tok, chat_id, **params)
    assert_status(r, 200)
    page = r.json()
    seqs = [m["seq"] for m in page["messages"]]
    assert seqs == sorted(set(seqs)), f"page not in ascending seq order: {seqs}"
    if "limit" in params:
        assert len(seqs) <= int(params["limit"]), f"page longer than limit: {seqs}"
    return page


def history_all(client: Client, tok: str, chat_id, direction: str = "backward",
                limit: int | None = None, max_pages: int = 500) -> list[dict]:
    """Every message visible to the caller, ascending, by walking the pages.

    backward: the newest page (no cursor), then `before=prev_cursor` until it is null;
    forward: `after=0` (the oldest page), then `after=next_cursor` until it is null.
    Asserts that the walk ends, pages never overlap and the first page's other cursor is
    null (the newest page ends at the newest message, the oldest starts at the oldest)."""
    assert direction in ("backward", "forward")
    pages: list[list[dict]] = []
    cursor = None
    for i in range(max_pages):
        params = {} if limit is None else {"limit": limit}
        if direction == "backward":
            if cursor is not None:
                params["before"] = cursor
        else:
            params["after"] = 0 if cursor is None else cursor
        page = history_page(client, tok, chat_id, **params)
        if i == 0:
            other = "next_cursor" if direction == "backward" else "prev_cursor"
            assert page[other] is None, f"first {direction} page: {other} is not null: {page}"
        msgs = page["messages"]
        if direction == "backward":
            pages.insert(0, msgs)
            cursor = page["prev_cursor"]
        else:
            pages.append(msgs)
            cursor = page["next_cursor"]
        if cursor is None:
            break
        assert msgs, f"empty page with a non-null cursor {cursor}: {page}"
    else:
        pytest.fail(f"history walk ({direction}) did not end within {max_pages} pages")
    out = [m for p in pages for m in p]
    seqs = [m["seq"] for m in out]
    assert seqs == sorted(set(seqs)), f"{direction} walk repeats or misorders seqs: {seqs}"
    return out


def system_events(msgs: list[dict]) -> list[tuple]:
    """(seq, event, system) of the system messages among msgs."""
    return [(m["seq"], m["system"]["event"], m["system"]) for m in msgs
            if m["kind"] == "system"]


def last_system(client: Client, tok: str, chat_id) -> dict:
    """The newest system message visible to the caller."""
    msgs = history_page(client, tok, chat_id, limit=100)["messages"]
    sys_msgs = [m for m in msgs if m["kind"] == "system"]
    assert sys_msgs, f"no system message in the newest page of chat {chat_id}"
    return sys_msgs[-1]


# --------------------------------------------------------------------------- database

def inbox_rows(user_id) -> list[tuple]:
    """The user's inbox: [(seq, type, chat_id, payload dict)] by seq."""
    out = psql("SELECT coalesce(json_agg(json_build_array(seq, type, chat_id, payload) "
               "ORDER BY seq), '[]'::json) FROM inbox WHERE user_id = $1", user_id)
    return [tuple(row) for row in json.loads(out)]


def inbox_seq(user_id) -> int:
    return psql_int("SELECT inbox_seq FROM users WHERE id = $1", user_id)


def assert_inbox_gap_free(user_id) -> list[tuple]:
    """The user's inbox has seqs 1..K with K = users.inbox_seq; returns the rows."""
    rows = inbox_rows(user_id)
    seqs = [r[0] for r in rows]
    assert seqs == list(range(1, len(rows) + 1)), \
        f"inbox of user {user_id} is not gap-free from 1: {seqs}"
    assert inbox_seq(user_id) == len(rows), \
        f"users.inbox_seq of {user_id} is {inbox_seq(user_id)}, inbox has {len(rows)} rows"
    return rows


def events(rows, type_: str, chat_id=None) -> list[dict]:
    """Payloads of the inbox rows of this type (and chat)."""
    return [r[3] for r in rows if r[1] == type_ and (chat_id is None or r[2] == int(chat_id))]


def message_event_seqs(rows, chat_id) -> list[int]:
    """Message seqs of the `message` events of one chat, in inbox order."""
    out = []
    for p in events(rows, "message", chat_id):
        assert p.get("chat_id") == int(chat_id), p
        out.append(p["message"]["seq"])
    return out


def message_seqs_db(chat_id) -> list[int]:
    out = psql("SELECT coalesce(string_agg(seq::text, ',' ORDER BY seq), '') "
               "FROM messages WHERE chat_id = $1", chat_id)
    return [int(x) for x in out.split(",")] if out else []


def last_seq_db(chat_id) -> int:
    return psql_int("SELECT last_seq FROM chats WHERE id = $1", chat_id)


def member_count_db(chat_id) -> int:
    return psql_int("SELECT count(*) FROM chat_members WHERE chat_id = $1", chat_id)


def member_ids_db(chat_id) -> set[int]:
    out = psql("SELECT coalesce(string_agg(user_id::text, ','), '') FROM chat_members "
               "WHERE chat_id = $1", chat_id)
    return {int(x) for x in out.split(",")} if out else set()


def chats_created_by(user_id) -> int:
    return psql_int("SELECT count(*) FROM chats WHERE creator_id = $1", user_id)


def memberships_of(user_id) -> int:
    return psql_int("SELECT count(*) FROM chat_members WHERE user_id = $1", user_id)


def missing_chat_id() -> int:
    """A chat id that does not exist (far past the identity's current maximum)."""
    return psql_int("SELECT coalesce(max(id), 0) + 1000000 FROM chats")


def chat_snapshot(chat_id) -> str:
    """Everything stored about a chat (row, members, messages, reactions) plus the inbox
    sizes of its members, as one JSON text: equal snapshots = nothing changed."""
    return psql(
        "SELECT json_build_object("
        " 'chat', (SELECT row_to_json(c) FROM chats c WHERE c.id = $1),"
        " 'members', (SELECT json_agg(m ORDER BY m.user_id) FROM chat_members m"
        "             WHERE m.chat_id = $1),"
        " 'messages', (SELECT json_agg(json_build_array(seq, sender_id, client_msg_id, body,"
        "              mentions, edited_at, deleted_at) ORDER BY seq) FROM messages"
        "              WHERE chat_id = $1),"
        " 'reactions', (SELECT json_agg(r ORDER BY r.seq, r.user_id, r.emoji)"
        "               FROM reactions r WHERE r.chat_id = $1),"
        # users join the chat's members through a materialized CTE: Citus joins the two
        # co-location groups (users by id, chat_members by chat) no other way
        " 'inbox', (WITH m AS MATERIALIZED (SELECT user_id FROM chat_members WHERE chat_id = $1)"
        "           SELECT json_agg(json_build_array(u.id, u.inbox_seq) ORDER BY u.id)"
        "           FROM users u JOIN m ON m.user_id = u.id)"
        ")::text", chat_id)


# --------------------------------------------------------------------------- unread

def assert_unread(chat: dict, count: int, mentions: int):
    """unread_count / unread_mentions of a Chat, and a has_unread flag that agrees."""
    got = (chat["unread_count"], chat["unread_mentions"])
    assert got == (count, mentions), \
        f"chat {chat['id']}: (unread_count, unread_mentions) = {got}, expected " \
        f"{(count, mentions)}: {chat}"
    if count > 0:
        assert chat["has_unread"] is True, chat
    if chat["last_read_seq"] >= chat["last_seq"]:
        assert chat["has_unread"] is False, chat


# --------------------------------------------------------------------------- threads

def run_threads(targets, timeout: float = THREAD_JOIN_TIMEOUT):
    """Run each callable in its own daemon thread, all started together; wait at most
    `timeout` seconds overall; re-raise the first exception a thread raised."""
    errors: list[BaseException] = []
    lock = threading.Lock()

    def wrap(fn):
        def run():
            try:
                fn()
            except BaseException as exc:       # noqa: BLE001 - reported to the test
                with lock:
                    errors.append(exc)
        return run

    threads = [threading.Thread(target=wrap(fn), daemon=True) for fn in targets]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    alive = sum(t.is_alive() for t in threads)
    if alive:
        pytest.fail(f"{alive} of {len(threads)} threads still running after {timeout} s "
                    "(server stuck or deadlocked?)", pytrace=False)
    if errors:
        raise errors[0]
