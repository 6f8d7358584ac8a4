"""Chats: direct and group creation, the member limit, listing (order, cursor pagination,
unread state, last message), get, rename, and the 404 wall around a chat for non-members
(docs/CONTRACT.md, issue 3)."""
import pytest

from chatlib import (CHATS, MAX_MEMBERS, assert_unread, bare_users, chat_path, chat_snapshot,
                     chats_created_by, cmid, create_chat_raw, delete_message_raw, emoji_path,
                     events, get_chat, inbox_rows, last_seq_db, last_system, list_chats_all,
                     list_chats_page, make_direct, make_group, member_count_db, members,
                     memberships_of, missing_chat_id, new_user, new_users, react_raw, send,
                     set_role)
from natterlib import RFC3339_UTC_RE, assert_problem, assert_status, psql, psql_int

UNKNOWN_USER_ID = 9_000_000_000_000


def direct_pair_count(a_id, b_id) -> int:
    lo, hi = sorted((a_id, b_id))
    return psql_int("SELECT count(*) FROM chats WHERE kind = 'direct' AND direct_lo = $1 "
                    "AND direct_hi = $2", lo, hi)


def set_last_message_at(chat_ids, when: str):
    psql("UPDATE chats SET last_message_at = $1::timestamptz WHERE id = ANY($2::bigint[])",
         when, "{" + ",".join(map(str, chat_ids)) + "}")


def get_message_text(client, tok, cid, seq):
    r = client.get(chat_path(cid, "messages", seq), token=tok)
    assert_status(r, 200)
    return r.json()["text"]


def chat_entry(client, tok, chat_id) -> dict:
    """The caller's chat list entry of chat_id."""
    found = [c for c in list_chats_all(client, tok, limit=100) if c["id"] == chat_id]
    assert len(found) == 1, f"chat {chat_id} appears {len(found)} times in the list"
    return found[0]


# --------------------------------------------------------------------------- direct

def test_direct_create_then_same_chat_from_either_side(client):
    """A direct chat is created once (201) and returned again (200, same id) to either
    user; its title is the other user's display_name and other_user the other User."""
    alice, ta = new_user(client, display_name="Alice Example")
    bob, tb = new_user(client, display_name="Bob Example")
    r = create_chat_raw(client, ta, {"kind": "direct", "user_id": bob["id"]})
    assert_status(r, 201)
    chat = r.json()
    assert chat["kind"] == "direct"
    assert chat["title"] == "Bob Example"
    assert chat["other_user"] == bob
    assert chat["member_count"] == 2
    assert RFC3339_UTC_RE.match(chat["created_at"])
    again = make_direct(client, ta, bob["id"], expect=200)
    assert again["id"] == chat["id"]
    theirs = make_direct(client, tb, alice["id"], expect=200)
    assert theirs["id"] == chat["id"]
    assert theirs["title"] == "Alice Example"
    assert theirs["other_user"] == alice
    assert get_chat(client, tb, chat["id"])["other_user"] == alice
    assert direct_pair_count(alice["id"], bob["id"]) == 1
    assert member_count_db(chat["id"]) == 2


def test_direct_title_follows_display_name(client):
    """A direct chat's title is the other user's current display_name."""
    alice, ta = new_user(client)
    bob, tb = new_user(client, display_name="Bob Before")
    chat = make_direct(client, ta, bob["id"])
    r = client.patch("/v1/users/me", json={"display_name": "Bob After"}, token=tb)
    assert_status(r, 200)
    got = get_chat(client, ta, chat["id"])
    assert got["title"] == "Bob After"
    assert got["other_user"]["display_name"] == "Bob After"


def test_direct_with_self_refused(client):
    """A direct chat with oneself is 422 validation_failed field=user_id; nothing is
    created."""
    me, tok = new_user(client)
    r = create_chat_raw(client, tok, {"kind": "direct", "user_id": me["id"]})
    assert_problem(r, 422, "validation_failed", field="user_id")
    assert chats_created_by(me["id"]) == 0
    assert memberships_of(me["id"]) == 0
    assert list_chats_page(client, tok)["chats"] == []


def test_direct_with_unknown_user_refused(client):
    """A direct chat with a user id that does not exist is 422 unknown_user; nothing is
    created."""
    me, tok = new_user(client)
    r = create_chat_raw(client, tok, {"kind": "direct", "user_id": UNKNOWN_USER_ID})
    assert_problem(r, 422, "unknown_user", field="user_id")
    assert chats_created_by(me["id"]) == 0
    assert memberships_of(me["id"]) == 0


@pytest.mark.parametrize("body,field", [
    ({"kind": "direct"}, "user_id"),
    ({"kind": "direct", "user_id": "12"}, "user_id"),
    ({"kind": "direct", "user_id": None}, "user_id"),
    ({"kind": "channel", "title": "x"}, "kind"),
    ({"title": "no kind", "member_ids": []}, "kind"),
    ({"kind": "group", "member_ids": []}, "title"),
    ({"kind": "group", "title": "", "member_ids": []}, "title"),
    ({"kind": "group", "title": "t" * 201, "member_ids": []}, "title"),
    ({"kind": "group", "title": "\u00e9" * 201, "member_ids": []}, "title"),
    ({"kind": "group", "title": "bell\x07", "member_ids": []}, "title"),
    ({"kind": "group", "title": "new\nline", "member_ids": []}, "title"),
    ({"kind": "group", "title": "del\x7f", "member_ids": []}, "title"),
    ({"kind": "group", "title": 7, "member_ids": []}, "title"),
    ({"kind": "group", "title": "ok", "member_ids": "1"}, "member_ids"),
    ({"kind": "group", "title": "ok", "member_ids": ["one"]}, "member_ids"),
])
def test_create_validation(client, body, field):
    """Invalid creation bodies (missing/wrong kind, bad user_id, empty / 201-character /
    control-character titles, bad member_ids) give 422 validation_failed with the field;
    nothing is created."""
    me, tok = new_user(client)
    r = create_chat_raw(client, tok, body)
    assert_problem(r, 422, "validation_failed", field=field)
    assert chats_created_by(me["id"]) == 0
    assert memberships_of(me["id"]) == 0


@pytest.mark.parametrize("title", ["x", "t" * 200, "\u00e9" * 200, "\U0001F600" * 200,
                                   "Caf\u00e9 \u2615 & friends"],
                         ids=["1-char", "200-ascii", "200-latin1", "200-emoji", "mixed"])
def test_group_title_bounds_accepted(client, title):
    """Titles of 1 and of 200 characters (multi-byte counted as characters) are accepted
    and returned unchanged."""
    _, tok = new_user(client)
    chat = make_group(client, tok, title)
    assert chat["title"] == title
    assert get_chat(client, tok, chat["id"])["title"] == title


# --------------------------------------------------------------------------- group

def test_group_create(client):
    """Creating a group: 201, the creator is owner, member_ids are made distinct and the
    creator listed among them is ignored, member_count counts everyone, the chat starts
    with system message seq 1 (event created, user_ids = the members) and every member gets
    a `message` inbox event for it."""
    (a, ta), (b, tb), (c, tc) = new_users(client, 3)
    r = create_chat_raw(client, ta, {"kind": "group", "title": "Trip",
                                     "member_ids": [b["id"], c["id"], b["id"], a["id"]]})
    assert_status(r, 201)
    chat = r.json()
    cid = chat["id"]
    assert chat["kind"] == "group"
    assert chat["title"] == "Trip"
    assert chat["my_role"] == "owner"
    assert chat["member_count"] == 3
    assert chat["last_seq"] == 1
    assert chat["other_user"] is None
    assert chat["muted"] is False
    first = chat["last_message"]
    assert first is not None and first["seq"] == 1 and first["kind"] == "system"
    assert first["system"]["event"] == "created"
    assert first["system"]["actor_id"] == a["id"]
    listed = set(first["system"]["user_ids"])
    assert {b["id"], c["id"]} <= listed <= {a["id"], b["id"], c["id"]}
    assert {m["user"]["id"]: m["role"] for m in members(client, ta, cid)} == {
        a["id"]: "owner", b["id"]: "member", c["id"]: "member"}
    assert get_chat(client, tb, cid)["my_role"] == "member"
    assert member_count_db(cid) == 3
    for user in (a, b, c):
        seqs = [p["message"]["seq"] for p in events(inbox_rows(user["id"]), "message", cid)]
        assert seqs == [1], f"user {user['id']}: message events {seqs}"


def test_group_with_no_other_members(client):
    """A group may start with the creator alone (member_ids empty)."""
    _, tok = new_user(client)
    chat = make_group(client, tok, "notes to self", [])
    assert chat["member_count"] == 1
    assert chat["my_role"] == "owner"


def test_group_member_limit(client):
    """100 members including the creator is the limit: 100 others (101 in all) is 409
    member_limit_reached with nothing created; 99 others gives a group of exactly 100;
    adding one more is 409 member_limit_reached and adds nobody."""
    owner, tok = new_user(client)
    others = bare_users(client, MAX_MEMBERS)
    ids = [u["id"] for u in others]
    r = create_chat_raw(client, tok, {"kind": "group", "title": "too big", "member_ids": ids})
    assert_problem(r, 409, "member_limit_reached")
    assert chats_created_by(owner["id"]) == 0
    assert memberships_of(ids[0]) == 0 and memberships_of(ids[-1]) == 0

    chat = make_group(client, tok, "full", ids[:99])
    assert chat["member_count"] == MAX_MEMBERS
    assert len(members(client, tok, chat["id"])) == MAX_MEMBERS
    assert member_count_db(chat["id"]) == MAX_MEMBERS

    r = client.post(chat_path(chat["id"], "members"), json={"user_ids": [ids[99]]}, token=tok)
    assert_problem(r, 409, "member_limit_reached")
    assert member_count_db(chat["id"]) == MAX_MEMBERS
    assert memberships_of(ids[99]) == 0
    assert last_seq_db(chat["id"]) == 1
    assert get_chat(client, tok, chat["id"])["member_count"] == MAX_MEMBERS


def test_group_unknown_member_refused(client):
    """A group whose member_ids name a user that does not exist is 422 unknown_user;
    nothing is created, not even for the valid ids."""
    me, tok = new_user(client)
    friend = bare_users(client, 1)[0]
    r = create_chat_raw(client, tok, {"kind": "group", "title": "x",
                                      "member_ids": [friend["id"], UNKNOWN_USER_ID]})
    assert_problem(r, 422, "unknown_user", field="member_ids")
    assert chats_created_by(me["id"]) == 0
    assert memberships_of(friend["id"]) == 0


# --------------------------------------------------------------------------- list

def test_list_ordered_by_last_activity(client):
    """GET /v1/chats lists newest activity first: creation counts as activity, a new
    message moves its chat to the top, for every member."""
    (a, ta), (b, tb) = new_users(client, 2)
    g1 = make_group(client, ta, "one")["id"]
    g2 = make_group(client, ta, "two", [b["id"]])["id"]
    d = make_direct(client, ta, b["id"])["id"]
    g3 = make_group(client, ta, "three")["id"]
    assert [c["id"] for c in list_chats_page(client, ta)["chats"]] == [g3, d, g2, g1]
    send(client, ta, g1, "bump")
    assert [c["id"] for c in list_chats_page(client, ta)["chats"]] == [g1, g3, d, g2]
    send(client, tb, d, "hi from b")
    assert [c["id"] for c in list_chats_page(client, ta)["chats"]] == [d, g1, g3, g2]
    send(client, tb, g2, "and here")
    assert [c["id"] for c in list_chats_page(client, tb)["chats"]] == [g2, d]
    page = list_chats_page(client, ta)
    assert page["next_cursor"] is None


@pytest.mark.parametrize("limit", [1, 2, 4, 100])
def test_list_pagination_with_ties(client, limit):
    """Chats with equal last_message_at are ordered by id descending, and walking the list
    with `limit` and next_cursor returns every chat exactly once in (last_message_at desc,
    id desc) order, across page boundaries that fall inside a tie."""
    (a, ta), (b, _) = new_users(client, 2)
    ids = [make_group(client, ta, f"g{i}")["id"] for i in range(5)]
    ids.append(make_direct(client, ta, b["id"])["id"])
    newer = [ids[0], ids[3]]
    older = [i for i in ids if i not in newer]
    set_last_message_at(older, "2026-01-01T00:00:00Z")
    set_last_message_at(newer, "2026-01-02T00:00:00Z")
    expected = sorted(newer, reverse=True) + sorted(older, reverse=True)
    got = list_chats_all(client, ta, limit=limit)
    assert [c["id"] for c in got] == expected


def test_list_default_limit(client):
    """Without limit a page holds at most 20 chats; the cursor continues it."""
    _, tok = new_user(client)
    ids = [make_group(client, tok, f"g{i}")["id"] for i in range(21)]
    page = list_chats_page(client, tok)
    assert [c["id"] for c in page["chats"]] == ids[::-1][:20]
    assert page["next_cursor"] is not None
    rest = list_chats_page(client, tok, cursor=page["next_cursor"])
    assert [c["id"] for c in rest["chats"]] == [ids[0]]
    assert rest["next_cursor"] is None


@pytest.mark.parametrize("params", [
    {"limit": "0"}, {"limit": "101"}, {"limit": "-1"}, {"limit": "abc"}, {"limit": "1.5"},
    {"cursor": "garbage"}, {"cursor": "!!!"}, {"cursor": "eyJ4Ijo1fQ"},
    {"cursor": "A" * 300}, {"cursor": "garbage", "limit": "5"},
])
def test_list_bad_parameters(client, params):
    """A malformed cursor or a limit outside 1..100 is 400 invalid_parameter."""
    _, tok = new_user(client)
    make_group(client, tok, "g")
    r = client.get(CHATS, token=tok, params=params)
    assert_problem(r, 400, "invalid_parameter")


def test_list_unread_state_and_last_message(client):
    """Each list entry carries unread_count, unread_mentions, has_unread and last_message
    (the newest visible message, tombstones included); the sender's own entry shows
    nothing unread."""
    (a, ta), (b, tb) = new_users(client, 2)
    cid = make_group(client, ta, "g", [b["id"]])["id"]
    entry = chat_entry(client, tb, cid)
    assert_unread(entry, 0, 0)
    assert entry["last_message"]["seq"] == 1
    assert entry["last_message"]["system"]["event"] == "created"

    m1 = send(client, ta, cid, "hello b", mentions=[b["id"]])
    entry = chat_entry(client, tb, cid)
    assert_unread(entry, 1, 1)
    assert entry["has_unread"] is True
    assert entry["last_message"]["seq"] == m1["seq"]
    assert entry["last_message"]["text"] == "hello b"
    mine = chat_entry(client, ta, cid)
    assert_unread(mine, 0, 0)
    assert mine["last_read_seq"] == m1["seq"]

    m2 = send(client, ta, cid, "second")
    entry = chat_entry(client, tb, cid)
    assert_unread(entry, 2, 1)
    assert entry["last_message"]["text"] == "second"

    assert_status(delete_message_raw(client, ta, cid, m2["seq"]), 204)
    entry = chat_entry(client, tb, cid)
    assert_unread(entry, 1, 1)
    last = entry["last_message"]
    assert last["seq"] == m2["seq"] and last["text"] is None and last["deleted_at"]
    assert get_chat(client, tb, cid)["unread_count"] == 1


# --------------------------------------------------------------------------- get / rename

def test_get_chat(client):
    """GET /v1/chats/{id} returns the Chat as the list shows it."""
    (a, ta), (b, _) = new_users(client, 2)
    cid = make_group(client, ta, "g", [b["id"]])["id"]
    send(client, ta, cid, "x")
    got = get_chat(client, ta, cid)
    listed = chat_entry(client, ta, cid)
    assert got == listed
    assert got["last_seq"] == 2 and got["member_count"] == 2


def test_rename(client):
    """Owner and admins may rename a group (200, system message `renamed` with the title and
    actor, a `rename` inbox event for every member); a plain member gets 403 forbidden and
    nothing changes; an invalid title is 422 and nothing changes."""
    (a, ta), (b, tb), (c, tc) = new_users(client, 3)
    cid = make_group(client, ta, "old", [b["id"], c["id"]])["id"]
    set_role(client, ta, cid, b["id"], "admin")

    r = client.patch(chat_path(cid), json={"title": "new"}, token=ta)
    assert_status(r, 200)
    assert r.json()["title"] == "new" and r.json()["id"] == cid
    sysmsg = last_system(client, tc, cid)
    assert sysmsg["system"]["event"] == "renamed"
    assert sysmsg["system"]["title"] == "new"
    assert sysmsg["system"]["actor_id"] == a["id"]
    for user in (a, b, c):
        got = events(inbox_rows(user["id"]), "rename", cid)
        assert [(p["title"], p["actor_id"]) for p in got] == [("new", a["id"])], got

    r = client.patch(chat_path(cid), json={"title": "by admin"}, token=tb)
    assert_status(r, 200)
    assert get_chat(client, tc, cid)["title"] == "by admin"

    before = chat_snapshot(cid)
    r = client.patch(chat_path(cid), json={"title": "by member"}, token=tc)
    assert_problem(r, 403, "forbidden")
    for bad in ("", "x" * 201, "tab\there"):
        r = client.patch(chat_path(cid), json={"title": bad}, token=ta)
        assert_problem(r, 422, "validation_failed", field="title")
    assert chat_snapshot(cid) == before
    assert get_chat(client, tc, cid)["title"] == "by admin"


def test_rename_direct_is_not_a_group(client):
    """Renaming a direct chat is 409 not_a_group; nothing changes."""
    (a, ta), (b, _) = new_users(client, 2)
    chat = make_direct(client, ta, b["id"])
    before = chat_snapshot(chat["id"])
    r = client.patch(chat_path(chat["id"]), json={"title": "ours"}, token=ta)
    assert_problem(r, 409, "not_a_group")
    assert chat_snapshot(chat["id"]) == before
    assert get_chat(client, ta, chat["id"])["title"] == b["display_name"]


# --------------------------------------------------------------------------- 404 wall

def chat_routes(cid, seq, member_id, self_id, newcomer_id):
    """(method, path, body) of every route under /v1/chats/{id}."""
    thumbs = emoji_path(cid, seq, "\U0001F44D")
    return [
        ("GET", chat_path(cid), None),
        ("PATCH", chat_path(cid), {"title": "hijacked"}),
        ("GET", chat_path(cid, "members"), None),
        ("POST", chat_path(cid, "members"), {"user_ids": [newcomer_id]}),
        ("DELETE", chat_path(cid, "members", member_id), None),
        ("DELETE", chat_path(cid, "members", self_id), None),
        ("PATCH", chat_path(cid, "members", member_id), {"role": "admin"}),
        ("PATCH", chat_path(cid, "members", self_id), {"role": "owner"}),
        ("GET", chat_path(cid, "messages"), None),
        ("GET", chat_path(cid, "messages") + "?before=5&limit=10", None),
        ("POST", chat_path(cid, "messages"), {"client_msg_id": cmid(), "text": "intruder"}),
        ("GET", chat_path(cid, "messages", seq), None),
        ("PATCH", chat_path(cid, "messages", seq), {"text": "edited by intruder"}),
        ("DELETE", chat_path(cid, "messages", seq), None),
        ("PUT", thumbs, None),
        ("DELETE", thumbs, None),
        ("POST", chat_path(cid, "read"), {"seq": seq}),
        ("GET", chat_path(cid, "receipts"), None),
    ]


@pytest.mark.parametrize("kind", ["group", "direct"])
def test_non_member_gets_chat_not_found_everywhere(client, kind):
    """A user who is not a member gets 404 chat_not_found on every chat route, with the same
    problem (type, code, status, title, members) as for a chat id that does not exist, and
    nothing changes: no message, member, reaction or read-marker row, no inbox event."""
    (a, ta), (b, tb), (x, tx) = new_users(client, 3)
    newcomer = bare_users(client, 1)[0]
    if kind == "group":
        cid = make_group(client, ta, "private", [b["id"]])["id"]
    else:
        cid = make_direct(client, ta, b["id"])["id"]
    msg = send(client, ta, cid, "secret", mentions=[b["id"]])
    assert_status(react_raw(client, tb, cid, msg["seq"], "\U0001F44D"), 200)
    ghost = missing_chat_id()
    before = chat_snapshot(cid)
    x_inbox = inbox_rows(x["id"])

    real_routes = chat_routes(cid, msg["seq"], b["id"], x["id"], newcomer["id"])
    ghost_routes = chat_routes(ghost, msg["seq"], b["id"], x["id"], newcomer["id"])
    for (method, path, body), (_, gpath, gbody) in zip(real_routes, ghost_routes):
        real = assert_problem(client.request(method, path, json=body, token=tx),
                              404, "chat_not_found")
        fake = assert_problem(client.request(method, gpath, json=gbody, token=tx),
                              404, "chat_not_found")
        for key in ("type", "code", "status", "title"):
            assert real[key] == fake[key], f"{method} {path}: {key} {real[key]!r} differs " \
                                           f"from a missing chat's {fake[key]!r}"
        assert set(real) == set(fake), f"{method} {path}: problem members differ: " \
                                       f"{sorted(real)} vs {sorted(fake)}"
        # a member sees the nonexistent chat the same way
        assert_problem(client.request(method, gpath, json=gbody, token=ta), 404,
                       "chat_not_found")

    assert chat_snapshot(cid) == before
    assert memberships_of(x["id"]) == 0
    assert memberships_of(newcomer["id"]) == 0
    assert inbox_rows(x["id"]) == x_inbox
    assert cid not in [c["id"] for c in list_chats_page(client, tx)["chats"]]
    assert get_message_text(client, tb, cid, msg["seq"]) == "secret"


@pytest.mark.parametrize("suffix,code", [
    ("abc", "chat_not_found"),
    ("-1", "chat_not_found"),
    ("0", "chat_not_found"),
    ("1.0", "chat_not_found"),
    ("99999999999999999999999", "chat_not_found"),
    ("abc/messages", "chat_not_found"),
    ("abc/members", "chat_not_found"),
    ("{cid}/messages/abc", "message_not_found"),
    ("{cid}/messages/99999999999999999999999", "message_not_found"),
    ("{cid}/messages/0", "message_not_found"),
    ("{cid}/messages/-1", "message_not_found"),
])
def test_non_numeric_path_ids(client, suffix, code):
    """Ids in the path that are not (in-range, positive) integers are 404 of the
    resource's kind: chat_not_found for the chat id, message_not_found for the seq."""
    _, tok = new_user(client)
    cid = make_group(client, tok, "g")["id"]
    r = client.get(CHATS + "/" + suffix.format(cid=cid), token=tok)
    assert_problem(r, 404, code)


@pytest.mark.parametrize("method", ["DELETE", "PATCH"])
@pytest.mark.parametrize("uid", ["abc", "-1", "99999999999999999999999"])
def test_non_numeric_member_ids(client, method, uid):
    """A member id in the path that is not an integer is 404 member_not_found; nothing
    changes."""
    _, tok = new_user(client)
    cid = make_group(client, tok, "g")["id"]
    before = chat_snapshot(cid)
    body = {"role": "admin"} if method == "PATCH" else None
    r = client.request(method, chat_path(cid, "members", uid), json=body, token=tok)
    assert_problem(r, 404, "member_not_found")
    assert chat_snapshot(cid) == before
