"""The Citus shapes of the batch functions (migrations/015) against the single-PostgreSQL ones
(migrations/004-007, 013), in every `make test`: on the same database state and the same
input, each pair must return the same rows and leave the same state behind. natter-api
calls the Citus ones only on a Citus coordinator (`make test-citus` drives them through the
API); this keeps them equal to the others as either side changes. Each side runs in its
own transaction, rolled back; times (now()) are left out of the comparison."""
import json
import os
import uuid

import pytest

from chatlib import make_direct, make_group, new_users, send
from natterlib import psql

pytestmark = pytest.mark.skipif(bool(os.environ.get("NATTER_TEST_CITUS_DISTRIBUTE")),
                                reason="the single-PostgreSQL functions are refused by Citus")


def snapshot(chats, users) -> str:
    """The state the batch functions write, for these chats and users, as one JSON line."""
    c, u = "'{%s}'::bigint[]" % ",".join(map(str, chats)), "'{%s}'::bigint[]" % ",".join(map(str, users))
    return f"""SELECT json_build_object(
      'chats', (SELECT json_agg(json_build_array(id, last_seq) ORDER BY id) FROM chats WHERE id = ANY ({c})),
      'messages', (SELECT json_agg(json_build_array(chat_id, seq, sender_id, client_msg_id, kind, body, mentions,
                                                    reply_to_seq, attachment_ids, body_sha256) ORDER BY chat_id, seq)
                     FROM messages WHERE chat_id = ANY ({c})),
      'outbox', (SELECT json_agg(json_build_array(chat_id, seq) ORDER BY chat_id, seq)
                   FROM push_outbox WHERE chat_id = ANY ({c})),
      'members', (SELECT json_agg(json_build_array(chat_id, user_id, last_read_seq, last_delivered_seq)
                                  ORDER BY chat_id, user_id) FROM chat_members WHERE chat_id = ANY ({c})),
      'users', (SELECT json_agg(json_build_array(id, inbox_seq) ORDER BY id) FROM users WHERE id = ANY ({u})),
      'inbox', (SELECT json_agg(json_build_array(user_id, seq, type, chat_id, payload) ORDER BY user_id, seq)
                  FROM inbox WHERE user_id = ANY ({u})),
      'devices', (SELECT json_agg(json_build_array(user_id, id, acked_seq) ORDER BY user_id, id)
                    FROM devices WHERE user_id = ANY ({u})))::text"""


def run_both(plain: str, citus: str, chats, users, *params, setup: str = ""):
    """Runs `setup; plain` and `setup; citus` (each a SELECT whose rows are compared as a
    sorted JSON list, minus the columns named *_at), each in its own rolled-back transaction;
    returns (rows, state) of the plain run after asserting the Citus run equals it."""
    out = []
    for call in (plain, citus):
        text = psql(f"""BEGIN;
{setup}
SELECT coalesce(json_agg(to_jsonb(r) - 'woken_at' - 'w_at' ORDER BY to_jsonb(r)::text), '[]')::text FROM ({call}) r;
{snapshot(chats, users)};
ROLLBACK;""", *params)
        rows, state = text.splitlines()[-2:]
        out.append((json.loads(rows), json.loads(state)))
    assert out[1][0] == out[0][0], "the Citus function returned other rows"
    assert out[1][1] == out[0][1], "the Citus function left another state"
    return out[0]


@pytest.fixture
def world(client):
    """Three users in a direct chat (a-b) and a group (a, b, c), a few messages sent through
    the API; d is in neither."""
    (a, ta), (b, tb), (c, tc), (d, td) = new_users(client, 4, prefix="cs")
    direct = make_direct(client, ta, b["id"])["id"]
    group = make_group(client, ta, "shapes", [b["id"], c["id"]])["id"]
    sent = [send(client, ta, direct, "one"), send(client, tb, direct, "two"), send(client, tc, group, "three")]
    return {"users": [a, b, c, d], "tokens": [ta, tb, tc, td], "direct": direct, "group": group, "sent": sent}


def send_batch(world) -> str:
    a, b, c, d = (u["id"] for u in world["users"])
    direct, group = world["direct"], world["group"]
    again = world["sent"][0]["client_msg_id"]
    twice = str(uuid.uuid4())

    def m(i, chat, sender, cmid=None, body="batched", **kw):
        e = {"i": i, "chat_id": chat, "sender_id": sender, "client_msg_id": cmid or str(uuid.uuid4()),
             "body": f"{body} {i}", "hash": f"h{i}", "mentions": [], "attachment_ids": [], "reply_to_seq": None}
        e.update(kw)
        return e
    return json.dumps([
        m(0, group, c, mentions=[a]), m(1, direct, a), m(2, direct, a, cmid=again),   # a retry of a stored one
        m(3, group, b, cmid=twice), m(4, group, b, cmid=twice),                       # twice in one batch
        m(5, direct, d), m(6, 999999999, a), m(7, direct, b, reply_to_seq=1), m(8, group, a)])


def test_send_batch_shapes_agree(world):
    users = [u["id"] for u in world["users"]]
    chats = [world["direct"], world["group"]]
    rows, state = run_both("SELECT * FROM natter_send_batch_set($1::jsonb)",
                           "SELECT * FROM natter_send_batch_chats($1::jsonb, false)", chats, users, send_batch(world))
    assert sorted(r["status"] for r in rows) == sorted(["new"] * 5 + ["existing"] * 2 + ["not_member"] * 2), rows
    run_both("SELECT * FROM natter_send_batch($1::jsonb)",
             "SELECT * FROM natter_send_batch_chats($1::jsonb, true)", chats, users, send_batch(world))


def test_fanout_shapes_agree(world):
    """natter_fanout_citus against natter_inbox_append with the same events: per new message
    (in batch order) one `message` event per member, numbered on each user's inbox_seq."""
    users = [u["id"] for u in world["users"]]
    chats = [world["direct"], world["group"], world["direct"]]
    payloads = json.dumps([{"chat_id": ch, "message": {"seq": 100 + k}} for k, ch in enumerate(chats)])
    cl = "'{%s}'::bigint[]" % ",".join(map(str, chats))
    events = f"""unnest({cl}) WITH ORDINALITY AS b(chat_id, k)
        JOIN jsonb_array_elements($1::jsonb) WITH ORDINALITY AS p(payload, k) USING (k)
        JOIN chat_members cm USING (chat_id)"""
    plain = f"""SELECT woken_user, woken_seq, woken_chat, (woken_data::jsonb -> 'message' ->> 'seq')::bigint AS mseq
      FROM natter_inbox_append((SELECT array_agg(cm.user_id ORDER BY b.k, cm.user_id) FROM {events}),
                               (SELECT array_agg(b.chat_id ORDER BY b.k, cm.user_id) FROM {events}),
                               (SELECT array_agg(p.payload ORDER BY b.k, cm.user_id) FROM {events}), 'message')"""
    citus = f"""SELECT woken_user, woken_seq, woken_chat, woken_mseq AS mseq
      FROM natter_fanout_citus({cl}, '{{0,1,2}}'::integer[], $1::jsonb)"""
    rows, _ = run_both(plain, citus, chats[:2], users, payloads)
    assert len(rows) == 2 + 3 + 2, rows


def test_read_batch_shapes_agree(world):
    a, b, c, d = (u["id"] for u in world["users"])
    direct, group = world["direct"], world["group"]
    args = f"'{{{direct},{direct},{group},{group},{direct},{group}}}'::bigint[], " \
           f"'{{{b},{b},{c},{a},{d},{b}}}'::bigint[], '{{1,2,1,1,1,9}}'::bigint[]"
    rows, state = run_both(f"SELECT * FROM natter_read_batch({args})", f"SELECT * FROM natter_read_batch_citus({args})",
                           [direct, group], [a, b, c, d])
    assert {r["status"] for r in rows if r["status"]} == {"ok", "not_member", "beyond"}, rows
    assert any(r["w_user"] for r in rows), "no receipt written"


def test_ack_batch_shapes_agree(world):
    """Every device acks its whole inbox (no hints: the ranges are read from the inbox), then
    the acks of pushes move markers for the chats' newest messages."""
    users = [u["id"] for u in world["users"]]
    direct, group = world["direct"], world["group"]
    ids = ",".join(map(str, users))
    acks = f"""(SELECT array_agg(dv.user_id ORDER BY dv.user_id, dv.id) FROM devices dv WHERE dv.user_id = ANY ('{{{ids}}}')),
      (SELECT array_agg(dv.id ORDER BY dv.user_id, dv.id) FROM devices dv WHERE dv.user_id = ANY ('{{{ids}}}')),
      (SELECT array_agg(u.inbox_seq ORDER BY dv.user_id, dv.id) FROM devices dv JOIN users u ON u.id = dv.user_id
        WHERE dv.user_id = ANY ('{{{ids}}}')),
      (SELECT array_agg(-1::bigint) FROM devices dv WHERE dv.user_id = ANY ('{{{ids}}}')),
      '{{}}', '{{}}', '{{}}', '{{}}', '{{}}'"""
    rows, _ = run_both(f"SELECT * FROM natter_ack_batch({acks})", f"SELECT * FROM natter_ack_batch_citus({acks})",
                       [direct, group], users)
    assert rows, "no delivered receipt written"
    a, b, c, d = users
    push = f"'{{{b},{c},{a},{d}}}'::bigint[], '{{{direct},{group},{group},{group}}}'::bigint[], '{{2,9,9,1}}'::bigint[]"
    rows, _ = run_both(f"SELECT * FROM natter_push_ack_batch({push})",
                       f"SELECT * FROM natter_push_ack_batch_citus({push})", [direct, group], users)
    assert rows, "no delivered receipt written"
