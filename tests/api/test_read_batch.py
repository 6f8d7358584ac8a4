"""Read markers go through their own commit pipeline (api/chat/readmarks.h): every
POST /v1/chats/{id}/read that queued while the previous batch committed is written in one
transaction (natter_read_batch). These tests fire reads at once so that batches hold
several of them — many members of one chat, the same member twice, stale and out-of-order
markers, a non-member and a read beyond the newest message — together with sends into the
same chats, and check what each request answered and what was stored: markers only move
forward, each answer reflects a marker at least as far as asked, every receipt is written
exactly once per move, inboxes stay gap-free, nothing deadlocks."""
import random
import threading

from chatlib import (assert_inbox_gap_free, events, inbox_rows, make_group,
                     new_users, read_raw, receipts, run_threads, send, clone)
from natterlib import assert_problem, assert_status, metric_samples


def read_receipts(user_id, cid) -> list[tuple]:
    return [(p["user_id"], p["seq"]) for p in events(inbox_rows(user_id), "receipt", cid)
            if p["kind"] == "read"]


def test_concurrent_reads_in_batches(client):
    """Eight members read one group at once, each several times in random order (stale
    markers included), while the owner keeps sending; a non-member and a read beyond the
    newest message are in the same burst. Each answer is 200 with last_read_seq >= the seq
    asked (forward only), or 404 / 422 for the odd ones; afterwards every marker is the
    member's highest read, the sender holds strictly increasing read receipts per member,
    and every inbox is gap-free."""
    users = new_users(client, 9, prefix="rb")
    (owner, to), members = users[0], users[1:]
    cid = make_group(client, to, "read batch", [u["id"] for u, _ in members])["id"]
    sent = [send(client, to, cid, f"m{i}") for i in range(12)]
    top = sent[-1]["seq"]
    (outsider, tx), = new_users(client, 1, prefix="rbx")
    rng = random.Random(7)
    plan = {u["id"]: rng.sample(range(1, top + 1), 5) for u, _ in members}
    answers, lock = [], threading.Lock()

    def reader(u, tok):
        c = clone(client)
        try:
            for seq in plan[u["id"]]:
                r = read_raw(c, tok, cid, seq)
                with lock:
                    answers.append((u["id"], seq, r.status_code, r.json()))
        finally:
            c.close()

    def odd():
        c = clone(client)
        try:
            assert_problem(read_raw(c, tx, cid, 1), 404, "chat_not_found")
            assert_problem(read_raw(c, members[0][1], cid, top + 1000), 422, "validation_failed",
                           field="seq")
        finally:
            c.close()

    def sender():
        c = clone(client)
        try:
            for i in range(6):
                send(c, to, cid, f"during {i}")
        finally:
            c.close()

    run_threads([lambda u=u, t=t: reader(u, t) for u, t in members] + [odd, sender])

    for uid, seq, status, body in answers:
        assert status == 200, (uid, seq, body)
        assert body["chat_id"] == cid and body["last_read_seq"] >= seq, (uid, seq, body)
    final = receipts(client, to, cid)
    for u, _ in members:
        assert final[u["id"]]["last_read_seq"] == max(plan[u["id"]]), (u["id"], final[u["id"]])
    got = read_receipts(owner["id"], cid)
    for u, _ in members:
        mine = [s for uid, s in got if uid == u["id"]]
        assert mine == sorted(set(mine)), f"receipts of {u['id']} not strictly increasing: {mine}"
        assert mine and mine[-1] == max(plan[u["id"]])
    for u, _ in users:
        assert_inbox_gap_free(u["id"])
    assert read_receipts(outsider["id"], cid) == []
    m = metric_samples(client.get("/metrics").text)
    assert m["natter_read_batched_total"] >= 8 * 5 and m["natter_read_batches_total"] >= 1


def test_reads_and_sends_across_overlapping_groups_do_not_deadlock(client):
    """Four users in three overlapping groups send and read each other's messages at the
    same time (send batches lock chats, member rows, users; read batches member rows, then
    users; ack flushes likewise): every request succeeds (no 503 from a deadlock) and every
    inbox stays gap-free."""
    users = new_users(client, 4, prefix="rd")
    ids = [u["id"] for u, _ in users]
    groups = [make_group(client, users[0][1], "g0", ids[1:3])["id"],
              make_group(client, users[1][1], "g1", [ids[2], ids[3]])["id"],
              make_group(client, users[3][1], "g2", [ids[0], ids[1]])["id"]]
    member_of = {groups[0]: ids[0:3], groups[1]: ids[1:4], groups[2]: [ids[3], ids[0], ids[1]]}

    def worker(k):
        u, tok = users[k]
        c = clone(client)
        rng = random.Random(k)
        try:
            for i in range(15):
                cid = rng.choice([g for g in groups if u["id"] in member_of[g]])
                m = send(c, tok, cid, f"{k}/{i}")
                assert_status(read_raw(c, tok, cid, m["seq"]), 200)
        finally:
            c.close()

    run_threads([lambda k=k: worker(k) for k in range(4)])
    for uid in ids:
        assert_inbox_gap_free(uid)
