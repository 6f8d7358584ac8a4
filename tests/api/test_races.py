"""Ordering and atomicity under concurrency (DESIGN.md invariants 1, 2 and 4): racing
sends with retries, sends into overlapping groups, racing member adds at the group limit,
and a direct chat created from both sides at once. Thread and request counts are bounded so
the module stays a few seconds long; every wait is bounded too."""
import random
import threading
from collections import defaultdict

import pytest

from chatlib import (CHATS, MAX_MEMBERS, add_members_raw, assert_inbox_gap_free, bare_users,
                     clone, cmid, get_chat, get_message, last_seq_db, make_group,
                     member_count_db, member_ids_db, memberships_of, message_event_seqs,
                     message_seqs_db, new_users, react_raw, read_raw, run_threads, send,
                     send_raw, set_role)
from natterlib import assert_problem, describe, psql, psql_int

BARRIER_TIMEOUT = 20


def stored_client_msg_ids(chat_id) -> dict:
    """{client_msg_id: [seq, ...]} of the chat's messages."""
    out = psql("SELECT coalesce(string_agg(client_msg_id::text || ':' || seq::text, ','), '') "
               "FROM messages WHERE chat_id = $1 AND client_msg_id IS NOT NULL", chat_id)
    got = defaultdict(list)
    for item in filter(None, out.split(",")):
        mid, seq = item.split(":")
        got[mid].append(int(seq))
    return got


def test_concurrent_sends_with_retries(client):
    """8 threads × 25 sends into one group of 5, about 20% of them retried at once (half of
    those as two concurrent requests): no errors; each client_msg_id got exactly one 201
    and every retry 200 with the identical Message; the chat holds seqs 1..N gap-free with
    N = 1 + the distinct client_msg_ids, each stored once; every member's inbox is gap-free
    and holds one `message` event per message, in seq order."""
    threads_n, sends_n = 8, 25
    users = new_users(client, 5)
    cid = make_group(client, users[0][1], "race", [u["id"] for u, _ in users[1:]])["id"]
    rng = random.Random(20261121)
    plans = [[rng.choices(["once", "retry", "concurrent"], [80, 10, 10])[0]
              for _ in range(sends_n)] for _ in range(threads_n)]
    results = defaultdict(list)           # client_msg_id -> [(status, body)]
    lock = threading.Lock()

    def record(mid, resp):
        body = resp.json() if resp.content else None
        with lock:
            results[mid].append((resp.status_code, body, describe(resp)))

    def worker(t):
        _, tok = users[t % len(users)]
        c1, c2 = clone(client), clone(client)

        def sender():
            for i, mode in enumerate(plans[t]):
                mid, text = cmid(), f"thread {t} message {i}"
                if mode == "concurrent":
                    barrier = threading.Barrier(2, timeout=BARRIER_TIMEOUT)
                    out = [None, None]

                    def go(k, c):
                        barrier.wait()
                        out[k] = send_raw(c, tok, cid, text, client_msg_id=mid)

                    twin = threading.Thread(target=go, args=(1, c2), daemon=True)
                    twin.start()
                    go(0, c1)
                    twin.join(BARRIER_TIMEOUT)
                    assert not twin.is_alive(), "concurrent retry did not finish"
                    for resp in out:
                        record(mid, resp)
                else:
                    record(mid, send_raw(c1, tok, cid, text, client_msg_id=mid))
                    if mode == "retry":
                        record(mid, send_raw(c1, tok, cid, text, client_msg_id=mid))
        return sender

    run_threads([worker(t) for t in range(threads_n)])

    assert len(results) == threads_n * sends_n
    seqs = []
    for mid, answers in results.items():
        statuses = sorted(s for s, _, _ in answers)
        assert all(s in (200, 201) for s in statuses), [d for _, _, d in answers]
        assert statuses.count(201) == 1, \
            f"{mid}: expected exactly one 201 among {statuses}: {[d for _, _, d in answers]}"
        bodies = [b for _, b, _ in answers]
        assert all(b == bodies[0] for b in bodies), f"{mid}: retries differ: {bodies}"
        assert bodies[0]["client_msg_id"] == mid
        seqs.append(bodies[0]["seq"])
    n = 1 + len(results)
    assert sorted(seqs) == list(range(2, n + 1))

    assert message_seqs_db(cid) == list(range(1, n + 1))
    assert last_seq_db(cid) == n
    stored = stored_client_msg_ids(cid)
    assert set(stored) == set(results)
    dup = {m: s for m, s in stored.items() if len(s) != 1}
    assert not dup, f"client_msg_ids stored more than once: {dup}"
    for mid, answers in results.items():
        assert stored[mid] == [answers[0][1]["seq"]]
    for user, _ in users:
        rows = assert_inbox_gap_free(user["id"])
        got = message_event_seqs(rows, cid)
        assert sorted(got) == list(range(1, n + 1)), \
            f"user {user['id']}: message events are not exactly 1..{n}"
        assert got == sorted(got), f"user {user['id']}: message events out of seq order"


def test_concurrent_sends_into_overlapping_groups(client):
    """Threads of four users send at once into three groups that overlap pairwise (A,B,C /
    B,C,D / C,D,A): no error or deadlock, every group's seqs are gap-free, and every user's
    inbox is gap-free with every message of each of their groups exactly once, in seq order,
    and nothing of the group they are not in."""
    (a, ta), (b, tb), (c, tc), (d, td) = users = new_users(client, 4)
    g1 = make_group(client, ta, "g1", [b["id"], c["id"]])["id"]
    g2 = make_group(client, tb, "g2", [c["id"], d["id"]])["id"]
    g3 = make_group(client, tc, "g3", [d["id"], a["id"]])["id"]
    groups_of = {a["id"]: [g1, g3], b["id"]: [g1, g2], c["id"]: [g1, g2, g3],
                 d["id"]: [g2, g3]}
    threads_n, sends_n = 8, 20
    sent = defaultdict(int)
    failures = []
    lock = threading.Lock()

    def worker(t):
        user, tok = users[t % len(users)]
        mine = groups_of[user["id"]]

        def sender():
            c = clone(client)
            for i in range(sends_n):
                gid = mine[(i + t) % len(mine)]
                r = send_raw(c, tok, gid, f"t{t} i{i}")
                with lock:
                    if r.status_code == 201:
                        sent[gid] += 1
                    else:
                        failures.append(describe(r))
        return sender

    run_threads([worker(t) for t in range(threads_n)])
    assert not failures, failures[:5]
    assert sum(sent.values()) == threads_n * sends_n

    for gid in (g1, g2, g3):
        n = 1 + sent[gid]
        assert message_seqs_db(gid) == list(range(1, n + 1)), f"chat {gid} has gaps"
        assert last_seq_db(gid) == n
    for user, _ in users:
        rows = assert_inbox_gap_free(user["id"])
        for gid in (g1, g2, g3):
            got = message_event_seqs(rows, gid)
            if gid in groups_of[user["id"]]:
                assert got == list(range(1, 2 + sent[gid])), \
                    f"user {user['id']}, chat {gid}: message events {got}"
            else:
                assert got == [], f"user {user['id']} got events of chat {gid}"


@pytest.mark.parametrize("batch", [8, 5])
def test_concurrent_member_adds_at_the_limit(client, batch):
    """Two admins add `batch` distinct users each at the same moment to a group of 90:
    with 8 + 8 only one request can fit (the other is 409 member_limit_reached and adds
    nobody); with 5 + 5 both fit exactly. The group never passes 100 members and each
    successful add writes one system message."""
    (owner, to), (admin, tadm) = new_users(client, 2)
    fill = bare_users(client, 88)
    cid = make_group(client, to, "crowd", [admin["id"]] + [u["id"] for u in fill])["id"]
    set_role(client, to, cid, admin["id"], "admin")
    assert member_count_db(cid) == 90
    seq_before = last_seq_db(cid)
    extra = bare_users(client, 2 * batch)
    sets = [[u["id"] for u in extra[:batch]], [u["id"] for u in extra[batch:]]]
    barrier = threading.Barrier(2, timeout=BARRIER_TIMEOUT)
    out = [None, None]

    def adder(k, tok):
        c = clone(client)

        def go():
            barrier.wait()
            out[k] = add_members_raw(c, tok, cid, sets[k])
        return go

    run_threads([adder(0, to), adder(1, tadm)])
    statuses = sorted(r.status_code for r in out)
    final = member_ids_db(cid)
    assert len(final) <= MAX_MEMBERS
    if 90 + 2 * batch <= MAX_MEMBERS:
        assert statuses == [200, 200], [describe(r) for r in out]
        assert set(sets[0]) | set(sets[1]) <= final
        assert len(final) == 90 + 2 * batch
        assert last_seq_db(cid) == seq_before + 2
    else:
        assert statuses == [200, 409], [describe(r) for r in out]
        winner = 0 if out[0].status_code == 200 else 1
        loser = 1 - winner
        assert_problem(out[loser], 409, "member_limit_reached")
        added = sorted(m["user"]["id"] for m in out[winner].json()["members"])
        assert added == sorted(sets[winner])
        assert set(sets[winner]) <= final
        assert not set(sets[loser]) & final, "the refused request added some users"
        for uid in sets[loser]:
            assert memberships_of(uid) == 0
        assert len(final) == 90 + batch
        assert last_seq_db(cid) == seq_before + 1
    assert member_count_db(cid) == len(final)


def test_concurrent_direct_creation_from_both_sides(client):
    """Two users creating their direct chat at the same moment end up with one chat: both
    answers carry the same id, at least one is 201 (the other 201 or 200), and the database
    holds one chat for the pair with both as members. Repeated over 5 fresh pairs."""
    for _ in range(5):
        (a, ta), (b, tb) = new_users(client, 2)
        barrier = threading.Barrier(2, timeout=BARRIER_TIMEOUT)
        out = [None, None]

        def creator(k, tok, other_id):
            c = clone(client)

            def go():
                barrier.wait()
                out[k] = c.post(CHATS, json={"kind": "direct", "user_id": other_id}, token=tok)
            return go

        run_threads([creator(0, ta, b["id"]), creator(1, tb, a["id"])])
        statuses = sorted(r.status_code for r in out)
        assert statuses in ([200, 201], [201, 201]), [describe(r) for r in out]
        ids = {r.json()["id"] for r in out}
        assert len(ids) == 1, f"two chats for one pair: {[describe(r) for r in out]}"
        lo, hi = sorted((a["id"], b["id"]))
        assert psql("SELECT count(*) FROM chats WHERE kind = 'direct' AND direct_lo = $1 "
                    "AND direct_hi = $2", lo, hi) == "1"
        assert member_ids_db(ids.pop()) == {a["id"], b["id"]}
        assert memberships_of(a["id"]) == 1 and memberships_of(b["id"]) == 1


def test_concurrent_reactions(client):
    """Six members react with the same emoji at once, each twice (PUT is idempotent): the
    count is exactly 6, one row per user, and `me` is right for a reactor and for the
    sender who did not react."""
    users = new_users(client, 7)
    (sender, ts) = users[0]
    cid = make_group(client, ts, "reacts", [u["id"] for u, _ in users[1:]])["id"]
    seq = send(client, ts, cid, "react!")["seq"]
    thumbs = "\U0001F44D"
    failures = []
    barrier = threading.Barrier(12, timeout=BARRIER_TIMEOUT)

    def reactor(tok):
        c = clone(client)

        def go():
            barrier.wait()
            r = react_raw(c, tok, cid, seq, thumbs)
            if r.status_code != 200:
                failures.append(describe(r))
        return go

    run_threads([reactor(tok) for _, tok in users[1:] for _ in range(2)])
    assert not failures, failures[:3]
    assert psql_int("SELECT count(*) FROM reactions WHERE chat_id = $1 AND seq = $2",
                    cid, seq) == 6
    assert get_message(client, users[1][1], cid, seq)["reactions"] == [
        {"emoji": thumbs, "count": 6, "me": True}]
    assert get_message(client, ts, cid, seq)["reactions"] == [
        {"emoji": thumbs, "count": 6, "me": False}]


def test_concurrent_reads_only_move_forward(client):
    """Reads of every seq 1..N sent at once, in shuffled order from 4 threads: each answer's
    last_read_seq is at least the seq it asked for, and the marker ends at N."""
    (a, ta), (b, tb) = new_users(client, 2)
    cid = make_group(client, ta, "reads", [b["id"]])["id"]
    for i in range(40):
        send(client, ta, cid, f"m{i}")
    n = get_chat(client, tb, cid)["last_seq"]
    seqs = list(range(1, n + 1))
    random.Random(7).shuffle(seqs)
    failures = []

    def reader(part):
        c = clone(client)

        def go():
            for seq in part:
                r = read_raw(c, tb, cid, seq)
                if r.status_code != 200 or r.json()["last_read_seq"] < seq:
                    failures.append((seq, describe(r)))
        return go

    run_threads([reader(seqs[k::4]) for k in range(4)])
    assert not failures, failures[:3]
    chat = get_chat(client, tb, cid)
    assert chat["last_read_seq"] == n
    assert chat["unread_count"] == 0
    assert psql_int("SELECT last_read_seq FROM chat_members WHERE chat_id = $1 AND user_id = $2",
                    cid, b["id"]) == n
