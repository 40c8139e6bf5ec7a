"""A rolling upgrade: pubsubsse 0.1.0 and this version sharing one log on Redis, then only this one.

pubsubsse 0.1.0 is taken from the repository's history (the last commit before the log got format
versions) and run under gunicorn from a tree of its own, next to servers of this version. While a
0.1.0 process is live, this version writes entries (and snapshots) in 0.1.0's format and applies
theirs; once the last one has stopped, it moves to format 2. Nothing is skipped, every process
holds the same state, and a browser's stream resumes across versions without a gap.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid

import pytest
import redis as redis_py

from .http_helpers import api, new_client, new_public_topic, publish, state, wait_for
from .redis_server import RedisServer
from .servers import ROOT, Server, print_outputs, stop_all
from .test_scaleout import ResumingReader

#: The last commit of pubsubsse 0.1.0's log format.
OLD_VERSION = "a4c1990"


@pytest.fixture(scope="module")
def old_tree(tmp_path_factory):
    """A directory with pubsubsse 0.1.0 and the test app, to run gunicorn from."""
    root = tmp_path_factory.mktemp("pubsubsse-0.1.0")
    archive = subprocess.run(["git", "archive", OLD_VERSION, "pubsubsse"], cwd=ROOT, capture_output=True)
    if archive.returncode != 0:
        pytest.skip(f"needs the repository's history (commit {OLD_VERSION}): {archive.stderr.decode()[:200]}")
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True)
    (root / "tests").mkdir()
    for name in ("__init__.py", "server_app.py", "gunicorn_hooks.py"):
        shutil.copy(ROOT / "tests" / name, root / "tests" / name)
    assert not (root / "pubsubsse" / "backends").exists(), "that is not 0.1.0"
    return root


def formats(redis: RedisServer, key: str) -> set[str]:
    """The formats of the entries in the log: "1" (0.1.0's) or the "v" field."""
    entries = redis_py.Redis.from_url(redis.url).xrange(key)
    return {fields.get(b"v", b"1").decode() for _, fields in entries}


def comparable(server) -> dict:
    view = state(server)
    view.pop("status_events")
    return view


@pytest.mark.timeout(240)
def test_old_and_new_processes_share_a_log_then_the_new_ones_move_on(old_tree):
    redis = RedisServer()
    key = f"t:{uuid.uuid4()}"
    env = {
        "PUBSUBSSE_REDIS_URL": redis.url,
        "PUBSUBSSE_REDIS_KEY": key,
        "PUBSUBSSE_HEARTBEAT": "1",
        "PUBSUBSSE_CLIENT_TIMEOUT": "none",
        "PUBSUBSSE_REDIS_SNAPSHOT_EVERY": "20",
    }
    new_env = {**env, "PUBSUBSSE_REDIS_ALIVE": "3"}
    servers = []
    try:
        old = Server("gevent", env=env, workers=2, cwd=old_tree)
        servers.append(old)
        assert "log_entries_skipped" not in api(old, "/stats").json(), "the old server must run 0.1.0"
        topic = new_public_topic(old)
        clients = [new_client(old) for _ in range(10)]
        for client in clients:
            api(old, "/sub", client_id=client, topic=topic)
        publish(old, topic, *range(20))  # more than 20 changes: 0.1.0 stores a snapshot of its own
        new = Server("gevent", env=new_env, workers=2)  # loads 0.1.0's snapshot and log
        servers.append(new)
        assert comparable(new) == comparable(old)

        reader = ResumingReader(clients[0], [old, new], 5)  # on old first; resumes on new
        reader.start()
        wait_for(lambda: comparable(new)["clients"][clients[0]]["status"] == "receiving", what="the stream on old")
        publish(new, topic, "from new")
        private = api(new, "/add/topic/private/", client_id=clients[1]).json()["topic_id"]
        assert api(old, "/sub", client_id=clients[1], topic=private).status_code == 200
        publish(old, topic, "from old")
        wait_for(lambda: len(reader.updates) >= 2, what="both updates")
        assert formats(redis, key) == {"1"}, "while 0.1.0 is live, everyone writes its format"
        new_state = comparable(new)
        assert new_state == comparable(old)

        # The rolling restart: the old server stops (its stream moves to a new one), a new one starts.
        old.stop()
        servers.remove(old)
        again = Server("gevent", env=new_env, workers=2)
        servers.append(again)
        publish(again, topic, "after the old one stopped")
        wait_for(lambda: len(reader.updates) >= 3, what="the stream to resume on a new server")

        def moved_on() -> bool:  # 0.1.0's last report goes stale after "alive" (3 s here)
            api(again, "/sub", client_id=clients[2], topic=topic)
            return "2" in formats(redis, key)

        wait_for(moved_on, timeout=20, what="format 2 once 0.1.0 is gone")
        publish(new, topic, "format 2", "still in order")
        assert reader.done.wait(30)
        assert reader.updates == ["from new", "from old", "after the old one stopped", "format 2", "still in order"]
        assert comparable(again) == comparable(new)
        for server in servers:
            assert api(server, "/stats").json()["log_entries_skipped"] == 0
    except Exception:
        print_outputs(servers)
        raise
    finally:
        stop_all(servers, redis)
