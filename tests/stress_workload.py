"""A bounded concurrent workload against one service, then invariant checks.

Run in-process under plain threads by ``test_stress.py``, and as
``python -m tests.stress_workload --gevent`` in a subprocess that monkey-patches
first (patching cannot be undone inside the pytest process).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
import traceback


def run(seconds: float, workers: int, seed: int) -> dict:
    from pubsubsse import PubSubError, SSEPubSubService

    from .sse import parse

    service = SSEPubSubService(heartbeat=0.05, queue_size=50, replay_size=100, client_timeout=None)
    removed: dict[str, set] = {"clients": set(), "topics": set(), "groups": set()}
    removed_lock = threading.Lock()
    errors: list[str] = []
    streams_read = [0]
    deadline = time.monotonic() + seconds
    counts = {"ops": 0}

    def note_removed(kind, obj):
        with removed_lock:
            removed[kind].add(obj.id)

    def pick(d):
        return random.choice(list(d.values())) if d else None

    def actor(n):
        rnd = random.Random(seed + n)
        try:
            while time.monotonic() < deadline:
                counts["ops"] += 1
                op = rnd.randrange(14)
                clients = service.get_clients()
                c = pick(clients)
                try:
                    if op == 0 or c is None:
                        service.new_client()
                    elif op == 1:
                        service.remove_client(c)
                        note_removed("clients", c)
                    elif op == 2:
                        public = service.get_public_topics()
                        if len(public) < 8:
                            service.new_public_topic()
                        else:
                            t = pick(public)
                            service.remove_public_topic(t)
                            note_removed("topics", t)
                    elif op == 3:
                        groups = service.get_groups()
                        if len(groups) < 4:
                            service.new_group()
                        else:
                            g = pick(groups)
                            service.remove_group(g)
                            note_removed("groups", g)
                    elif op == 4:
                        g = pick(service.get_groups())
                        if g:
                            g.add_client(c) if rnd.random() < 0.7 else g.remove_client(c)
                    elif op == 5:
                        g = pick(service.get_groups())
                        group_topics = g.get_topics() if g else {}
                        if g and len(group_topics) < 3:
                            g.new_topic()
                        elif g:
                            t = pick(group_topics)
                            g.remove_topic(t)
                            note_removed("topics", t)
                    elif op == 6:
                        private = c.get_private_topics()
                        if len(private) < 2:
                            c.new_private_topic()
                        else:
                            t = pick(private)
                            c.remove_private_topic(t)
                            note_removed("topics", t)
                    elif op in (7, 8):
                        t = pick(c.get_all_topics())
                        if t:
                            c.sub(t) if op == 7 else c.unsub(t)
                    elif op in (9, 10):
                        t = pick(c.get_all_topics())
                        if t:
                            t.pub({"n": n, "x": "é<&"})
                    elif op == 11:
                        for client in clients.values():
                            client.get_all_topics()
                            client.get_subscribed_topics()
                    else:
                        consume(c, rnd)
                except PubSubError:
                    pass  # races with removals are expected; they must raise cleanly
        except Exception:
            errors.append(traceback.format_exc())

    def consume(c, rnd):
        try:
            stream = c.stream(last_event_id=rnd.choice([None, "1", "5"]))
        except PubSubError:
            return
        raw = b""
        end = time.monotonic() + rnd.random() * 0.05
        while time.monotonic() < end:
            chunk = stream.read(timeout=0.01)
            if chunk is None:
                break
            raw += chunk
        stream.close()
        parsed = parse(raw)
        ids = parsed.ids
        assert ids == sorted(set(ids)), ids
        streams_read[0] += 1

    threads = [threading.Thread(target=actor, args=(i,), daemon=True) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 20)
    alive = sum(t.is_alive() for t in threads)
    problems = check_invariants(service, removed) if not alive else ["workers still running: deadlock?"]
    service.close()
    return {
        "errors": errors,
        "alive": alive,
        "problems": problems,
        "ops": counts["ops"],
        "streams": streams_read[0],
        "clients": len(service.get_clients()),
    }


def check_invariants(service, removed) -> list[str]:
    problems = []
    clients = service.get_clients()
    groups = service.get_groups()
    all_topics = {tid: record.view for tid, record in service._core.topics.items()}
    for cid in removed["clients"] & set(clients):
        problems.append(f"removed client {cid} still registered")
    for tid in removed["topics"] & set(all_topics):
        problems.append(f"removed topic {tid} still registered")
    for gid in removed["groups"] & set(groups):
        problems.append(f"removed group {gid} still registered")
    for c in clients.values():
        visible = c.get_all_topics()
        for tid, t in c.get_subscribed_topics().items():
            if tid not in visible:
                problems.append(f"client subscribed to invisible topic {tid}")
            if not t.is_subscribed(c):
                problems.append("subscription not mirrored on the topic")
        for tid in visible:
            if tid not in all_topics:
                problems.append(f"client sees unregistered topic {tid}")
        for g in c.get_groups().values():
            if g.get_client_by_id(c.id) is not c or g.id not in groups:
                problems.append("group membership not mirrored")
    for t in all_topics.values():
        for cid in t.get_clients():
            if cid not in clients:
                problems.append(f"topic {t.id} has unregistered subscriber")
    for g in groups.values():
        for cid in g.get_clients():
            if cid not in clients:
                problems.append(f"group {g.id} has unregistered member")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gevent", action="store_true")
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.gevent:
        from gevent import monkey

        monkey.patch_all()
        import gevent.monkey

        assert gevent.monkey.is_module_patched("threading")
    result = run(args.seconds, args.workers, args.seed)
    result["gevent"] = args.gevent
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
