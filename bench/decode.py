"""What reading one publish from the log costs every process before it applies it.

    python3 -m bench.decode [--repeat 40] [--out FILE.jsonl]

Each process decodes every entry of the log (``decode_entry``) and checks every published body
(``check_update_body``: JSON, one update, the entry's topic, no line break), whatever topics it
holds streams of. This times both on a publish of a small message (about 100 bytes), as the
fastest of ``--repeat`` rounds of 50,000 (the fastest round is the least disturbed by the rest
of the machine). One JSON line, with the machine's steal over the run.
"""

from __future__ import annotations

import argparse
import time
import timeit

from pubsubsse.backends._entries import check_update_body, decode_entry, encode_entry
from pubsubsse.core._messages import encode_update

from .run import commit, emit, steal_pct, steal_ticks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--out", help="append the JSON line to this file too")
    args = parser.parse_args()
    data = {"id": 12345, "status": "shipped", "items": [1, 2, 3], "note": "hello world"}
    body = encode_update("T-orders", data)
    entry = encode_entry("P-abcdef0123456789", 12345, "pub", ("T-orders", body), 2)
    fields = {name.encode(): value for name, value in entry.items()}

    def read_one() -> None:
        check_update_body(decode_entry(fields)[3])

    stolen = steal_ticks()
    best = min(timeit.repeat(read_one, number=50_000, repeat=args.repeat)) / 50_000
    result = {
        "bench": "decode",
        "us_per_publish_entry": round(best * 1e6, 2),
        "body_bytes": len(body),
        "steal_pct": steal_pct(stolen, steal_ticks()),
        "commit": commit(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
