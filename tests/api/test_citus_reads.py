"""The read paths and the worker's queries on Citus (issue 12, item 5).

`make test-citus` runs these against a Citus coordinator with the tables distributed as
scripts/citus-distribute.sql declares (chat-keyed and user-keyed tables in two
co-location groups, which Citus joins only through an intermediate result); `make test`
runs them against plain PostgreSQL, where they must pass the same way.

The messages they read are written straight into the database (as test_search's timeout
test does), not sent: what they prove does not depend on the send pipeline.
"""
import random
import string

from chatlib import (add_members, chat_path, edit_raw, get_message, history_page,
                     make_direct, make_group, members, new_user, new_users, receipts,
                     set_role)
from eventlib import heartbeat, presence
from natterlib import Client, assert_status, describe, need_env, psql, psql_int
from pushlib import PUSH_WAIT, push_account, push_stack  # noqa: F401  (a fixture)

SEARCH = "/v1/search"


def word() -> str:
    """A made-up lowercase word no other test writes."""
    return "zc" + "".join(random.choices(string.ascii_lowercase, k=10))


def hits(client, tok, q, **params) -> list[tuple[int, int]]:
    """(chat_id, seq) of every result of a search's first page."""
    r = client.get(SEARCH, params={"q": q, **params}, token=tok)
    assert_status(r, 200)
    return [(h["chat_id"], h["seq"]) for h in r.json()["results"]]


def on_citus() -> bool:
    return psql_int("SELECT count(*) FROM pg_extension WHERE extname = 'citus'") == 1


def seed_messages(chat_id, sender_id, texts) -> list[int]:
    """Appends live text messages from sender_id to the chat (seqs after its last_seq,
    chats.last_seq moved with them); their seqs."""
    last = psql_int("SELECT last_seq FROM chats WHERE id = $1", chat_id)
    arr = "{" + ",".join('"' + t + '"' for t in texts) + "}"
    psql("INSERT INTO messages (chat_id, seq, sender_id, kind, body)"
         " SELECT $1::bigint, $2::bigint + x.o, $3::bigint, 'text', x.t"
         " FROM unnest($4::text[]) WITH ORDINALITY AS x(t, o)", chat_id, last, sender_id, arr)
    psql("UPDATE chats SET last_seq = $2::bigint, last_message_at = now() WHERE id = $1::bigint",
         chat_id, last + len(texts))
    return list(range(last + 1, last + len(texts) + 1))


def url_with_option(url: str, option: str) -> str:
    """The database URL with a server option (`-c name=value`) for every session."""
    enc = option.replace(" ", "%20").replace("=", "%3D")
    if url.startswith(("postgresql://", "postgres://")):
        return url + ("&" if "?" in url else "?") + "options=" + enc
    return f"{url} options='{option}'"


def test_member_list_names_every_member(client):
    """GET /v1/chats/{id}/members answers each member with their User (users is keyed
    by user, chat_members by chat: the list joins them through the chat's member rows),
    and a role change answers the one member the same way."""
    (a, ta), (b, _), (c, _) = new_users(client, 3)
    cid = make_group(client, ta, "citus members", [b["id"]])["id"]
    add_members(client, ta, cid, [c["id"]])
    got = members(client, ta, cid)
    assert [(m["user"]["id"], m["user"]["username"], m["user"]["display_name"]) for m in got] == \
        sorted((u["id"], u["username"], u["display_name"]) for u in (a, b, c)), got
    assert {m["user"]["id"]: m["role"] for m in got} == {a["id"]: "owner", b["id"]: "member",
                                                         c["id"]: "member"}
    changed = set_role(client, ta, cid, b["id"], "admin")
    assert changed["user"] == b and changed["role"] == "admin", changed


def test_presence_shows_contacts_and_hides_strangers(client):
    """GET /v1/presence: someone who shares a chat with the caller reads as online with
    a last_seen_at; a stranger reads as never seen (the contacts are found among the
    caller's chats, then joined with users)."""
    (a, ta), (b, tb), (s, ts) = new_users(client, 3)
    make_direct(client, ta, b["id"])
    for tok in (ta, tb, ts):
        heartbeat(client, tok)
    got = presence(client, ta, [a["id"], b["id"], s["id"]])
    assert got[b["id"]]["online"] is True and got[b["id"]]["last_seen_at"], got
    assert got[s["id"]] == {"user_id": s["id"], "online": False, "last_seen_at": None}, got
    assert got[a["id"]]["online"] is True, got


def test_edit_answers_the_edited_message(client):
    """PATCH /v1/chats/{id}/messages/{seq} answers the edited Message (on Citus read back
    after the update: RETURNING allows no STABLE function there)."""
    (a, ta), (b, tb) = new_users(client, 2)
    cid = make_group(client, ta, "citus edit", [b["id"]])["id"]
    seq, = seed_messages(cid, a["id"], ["first words"])
    r = edit_raw(client, ta, cid, seq, "second words")
    assert_status(r, 200)
    msg = r.json()
    assert (msg["chat_id"], msg["seq"], msg["text"]) == (cid, seq, "second words"), describe(r)
    assert msg["edited_at"] and msg["sender_id"] == a["id"], msg
    assert get_message(client, tb, cid, seq)["text"] == "second words"


def test_one_chat_reads_are_single_shard(client, start_api, spec):
    """Everything a request about one chat reads — the chat (with its last message and
    unread count), its receipts, its history, one message, a search narrowed to it (in both orders, with a sender filter) — and a login or a
    lookup by username run on one shard: on Citus this server's sessions turn any
    multi-shard statement into an error (citus.multi_task_query_log_level), and these
    requests still answer with the right rows. A search over all the caller's chats is
    multi-shard by nature: there it fails, which shows the guard is on (plain
    PostgreSQL ignores the setting). The chat itself is created on the shared server
    (creating one writes to every member's inbox: a multi-shard write)."""
    url = url_with_option(need_env("NATTER_TEST_DATABASE_URL"),
                          "-c citus.multi_task_query_log_level=error")
    srv = start_api(NATTER_DATABASE_URL=url)
    c = Client(srv.base_url, spec)
    try:
        (a, ta), (b, tb) = new_users(c, 2)      # registered and logged in on this server
        r = c.get("/v1/users", params={"username": b["username"].upper()}, token=ta)
        assert_status(r, 200)
        assert r.json() == b, describe(r)
        cid = make_group(client, ta, "one shard", [b["id"]])["id"]
        w = word()
        seqs = seed_messages(cid, a["id"], [f"{w} one", f"{w} two", "other words"])
        seqs += seed_messages(cid, b["id"], [f"{w} three"])
        chat = c.get(chat_path(cid), token=tb)
        assert_status(chat, 200)
        assert chat.json()["last_message"]["seq"] == seqs[-1], describe(chat)
        assert chat.json()["unread_count"] == 3, describe(chat)
        assert set(receipts(c, tb, cid)) == {a["id"], b["id"]}
        page = history_page(c, tb, cid, limit=10)
        assert [m["seq"] for m in page["messages"]][-4:] == seqs, page
        assert get_message(c, tb, cid, seqs[1])["text"] == f"{w} two"
        for order in ("newest", "relevance"):
            assert sorted(hits(c, tb, w, chat_id=cid, order=order)) == \
                [(cid, s) for s in (seqs[0], seqs[1], seqs[3])]
            assert sorted(hits(c, tb, w, chat_id=cid, sender_id=a["id"], order=order)) == \
                [(cid, seqs[0]), (cid, seqs[1])]
        everywhere = c.get(SEARCH, params={"q": w}, token=tb)
        if on_citus():
            assert everywhere.status_code == 500, describe(everywhere)
        else:
            assert_status(everywhere, 200)
    finally:
        c.close()


def test_search_over_all_chats(client):
    """A search without chat_id (multi-shard on Citus) finds the caller's matches in
    every chat they are in, narrowed by sender when asked, and nothing of a chat they
    are not in."""
    (a, ta), (b, tb), (x, tx) = new_users(client, 3)
    w = word()
    one = make_direct(client, ta, b["id"])["id"]
    two = make_group(client, tb, "citus search", [a["id"]])["id"]
    other = make_direct(client, tx, b["id"])["id"]
    s1 = seed_messages(one, a["id"], [f"{w} in one"])
    s2 = seed_messages(two, b["id"], [f"{w} in two"])
    seed_messages(other, x["id"], [f"{w} not for a"])
    assert sorted(hits(client, ta, w)) == sorted([(one, s1[0]), (two, s2[0])])
    assert hits(client, ta, w, sender_id=b["id"]) == [(two, s2[0])]


def test_push_reaches_a_member_with_a_token(push_stack):  # noqa: F811  (the fixture)
    """natter-worker's push for a message finds the chat's members with a live push
    token (members are keyed by chat, devices by user: the members come first, as an
    array) and pushes to them: here a push_outbox row past due, as a send whose job was
    lost leaves it, is re-enqueued by the reconciler and reaches the recipient's phone."""
    stack = push_stack()
    c = stack.client
    b, tokens = push_account(c, prefix="cr")
    a, ta = new_user(c)
    cid = make_direct(c, ta, b.id)["id"]
    seq, = seed_messages(cid, a["id"], ["a push for b"])
    psql("INSERT INTO push_outbox (chat_id, seq, due_at) VALUES ($1, $2, now() - interval '1 minute')",
         cid, seq)
    got = stack.hook.wait_count(1, timeout=PUSH_WAIT * 2, tokens=tokens)
    body = got[0].json
    assert (body["chat_id"], body["seq"], body["user_id"]) == (cid, seq, b.id), stack.hook.dump(got)

