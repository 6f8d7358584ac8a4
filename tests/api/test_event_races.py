"""Long-poll delivery under concurrency (DESIGN.md invariant 4: no gaps, no duplicates per
device, however many senders race; CONTRACT.md issue 4). Thread and message counts are
bounded so the module takes a few seconds; every wait and loop is bounded too."""
import random
import threading
import time

from chatlib import clone, make_direct, make_group, new_users, run_threads, send
from eventlib import (AsyncPoll, Listener, device_acked_seq, head, inbox_max_seq,
                      inbox_payloads, chat_messages_db, of_type, stored)
from natterlib import new_account

QUIESCE_TIMEOUT = 30        # seconds for the pollers to catch up after the last send


def test_no_gaps_no_duplicates_per_device(client):
    """3 users × 2 devices poll in loops (each device keeps its own cursor `next`) while 4
    sender threads race 15 messages each into a mix of direct and group chats among them
    (the pollers' acks meanwhile add delivered receipts to the senders' inboxes). Once
    every device has acked its user's head: each device received exactly the stored seqs
    1..K of its user (K = max inbox seq in the database), in order, no duplicates; each
    event equals its inbox row; the `message` events are exactly the messages of the
    user's chats in the database (per chat in seq order, same texts)."""
    accts = [new_account(client, devices=2, prefix="r") for _ in range(3)]
    for acct in accts:
        for s in acct.sessions:
            head(client, s["access_token"])
    a, b, c = accts
    chats = {
        make_direct(client, a.token, b.id)["id"]: [a, b],
        make_direct(client, a.token, c.id)["id"]: [a, c],
        make_direct(client, b.token, c.id)["id"]: [b, c],
        make_group(client, a.token, "all three", [b.id, c.id])["id"]: [a, b, c],
        make_group(client, b.token, "a and b", [a.id])["id"]: [a, b],
    }
    groups = set(list(chats)[3:])              # a group starts with a system message
    chats_of = {acct.id: [cid for cid, ms in chats.items() if acct in ms] for acct in accts}

    listeners = []
    for acct in accts:
        for i, s in enumerate(acct.sessions):
            listeners.append((acct, s["device_id"],
                              Listener(client, s["access_token"], since=0, timeout=2,
                                       lifetime=90, label=f"user {acct.id} device {i}")))

    sent = {}                                     # (chat_id, seq) -> text
    lock = threading.Lock()

    def sender(t):
        acct = accts[t % 3]
        rng = random.Random(1000 + t)
        c2 = clone(client)
        try:
            for i in range(15):
                cid = rng.choice(chats_of[acct.id])
                text = f"sender {t} message {i}"
                msg = send(c2, acct.token, cid, text)
                with lock:
                    sent[(cid, msg["seq"])] = text
        finally:
            c2.close()

    run_threads([lambda t=t: sender(t) for t in range(4)], timeout=60)
    assert len(sent) == 60

    # wait until every device has acked its user's head (then no receipt can follow)
    deadline = time.monotonic() + QUIESCE_TIMEOUT
    stable = 0
    last = None
    while True:
        for _, _, lst in listeners:
            lst.check()
        heads = {acct.id: inbox_max_seq(acct.id) for acct in accts}
        state = (heads, [(lst.next, device_acked_seq(dev)) for _, dev, lst in listeners])
        caught_up = all(lst.next == heads[acct.id] and device_acked_seq(dev) == heads[acct.id]
                        for acct, dev, lst in listeners)
        stable = stable + 1 if caught_up and state == last else (1 if caught_up else 0)
        last = state
        if stable >= 2:
            break
        assert time.monotonic() < deadline, \
            f"devices did not catch up within {QUIESCE_TIMEOUT} s: heads {heads}, " \
            f"cursors/acks {state[1]}"
        time.sleep(0.3)
    for _, _, lst in listeners:
        lst.stop()
    for _, _, lst in listeners:
        lst.join(2 + 5 + 5)

    db_msgs = chat_messages_db(chats)
    for cid in chats:
        n = sum(1 for (c_, _) in sent if c_ == cid) + (cid in groups)
        assert sorted(s for (c_, s) in db_msgs if c_ == cid) == list(range(1, n + 1)), \
            f"chat {cid}: messages in the database are not 1..{n}"
    for acct, dev, lst in listeners:
        k = heads[acct.id]
        evs = stored(lst.events)
        seqs = [e["seq"] for e in evs]
        assert seqs == list(range(1, k + 1)), \
            f"{lst.label}: received seqs are not exactly 1..{k}: {seqs}"
        rows = inbox_payloads(acct.id)
        assert sorted(rows) == seqs
        for e in evs:
            assert (e["type"], e["chat_id"], e["data"]) == rows[e["seq"]], \
                f"{lst.label}: event {e} differs from its inbox row {rows[e['seq']]}"
        got = [(e["chat_id"], e["data"]["message"]["seq"], e["data"]["message"]["text"])
               for e in of_type(evs, "message")]
        want = sorted((cid, s, body) for (cid, s), (_, kind, body) in db_msgs.items()
                      if cid in chats_of[acct.id])
        assert sorted(got) == want, f"{lst.label}: message events differ from the database"
        for cid in chats_of[acct.id]:
            per_chat = [s for (c_, s, _) in got if c_ == cid]
            assert per_chat == sorted(per_chat), \
                f"{lst.label}: chat {cid} message events out of order: {per_chat}"
        for (cid, s), text in sent.items():
            if cid in chats_of[acct.id]:
                assert (cid, s, text) in got


def test_wakeup_not_lost_when_send_races_the_poll(client):
    """30 rounds in which B's poll (timeout 10) and A's send start at almost the same time
    (0–20 ms apart, either side first): every poll answers promptly (< 3 s, never at its
    timeout) with exactly that message — a send committed while the poll was being set up
    is never missed."""
    (a, ta), (b, tb) = new_users(client, 2, prefix="r")
    head(client, ta)
    head(client, tb)
    cid = make_direct(client, ta, b["id"])["id"]
    hb = head(client, tb)
    rng = random.Random(4242)
    sender = clone(client)
    try:
        for i in range(30):
            p = AsyncPoll(client, tb, since=hb, timeout=10)
            time.sleep(rng.uniform(0, 0.02))
            msg = send(sender, ta, cid, f"round {i}")
            body = p.body(within=15)
            assert p.elapsed < 3, f"round {i}: the poll answered after {p.elapsed:.2f} s"
            evs = stored(body["events"])
            assert [e["data"]["message"] for e in evs] == [msg], f"round {i}: {body}"
            hb = body["next"]
    finally:
        sender.close()
