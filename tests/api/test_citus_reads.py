"""The read paths and the worker's queries on Citus (issue 12, item 5).

`make test-citus` runs these against a Citus coordinator with the tables distributed as
scripts/citus-distribute.sql declares (chat-keyed and user-keyed tables in two
co-location groups, which Citus joins only through an intermediate result); `make test`
runs them against plain PostgreSQL, where they must pass the same way.

The messages they read are written straight into the database (as test_search's timeout
test does), not sent: what they prove does not depend on the send pipeline.
"""
from chatlib import (add_members, edit_raw, get_message, make_direct, make_group, members,
                     new_user, new_users, set_role)
from eventlib import heartbeat, presence
from natterlib import assert_status, describe, psql, psql_int
from pushlib import PUSH_WAIT, push_account, push_stack  # noqa: F401  (a fixture)


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

