"""Publishing from a cron job or a shell script.

    python3 -m example.publish_cli orders '{"report": "ready"}'

    # crontab: the nightly report, announced to every browser that has the page open
    PUBSUBSSE_REDIS_URL=redis://127.0.0.1:6379/0
    0 3 * * * cd /srv/app && python3 -m example.publish_cli reports '{"nightly": "done"}'

Publishes DATA (JSON) to the public topic named TOPIC (created if absent) of the service shared
through ``PUBSUBSSE_REDIS_URL`` and ``PUBSUBSSE_REDIS_KEY``. Inside a Flask app, ``flask pubsubsse
publish TOPIC DATA`` does the same.
"""

from __future__ import annotations

import argparse
import json
import os

from pubsubsse import Publisher


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Publish DATA (JSON) to the public topic named TOPIC.")
    parser.add_argument("topic")
    parser.add_argument("data", type=json.loads)
    args = parser.parse_args(argv)
    publisher = Publisher(
        os.environ.get("PUBSUBSSE_REDIS_URL", "redis://127.0.0.1:6379/0"),
        redis_key=os.environ.get("PUBSUBSSE_REDIS_KEY", "pubsubsse:log"),
    )
    try:
        publisher.publish(args.topic, args.data)
    finally:
        publisher.close()


if __name__ == "__main__":
    main()
