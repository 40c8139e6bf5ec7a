"""How RedisBackend(cluster=True) names its keys and reaches a node other than the URL's."""

from __future__ import annotations

import pytest

from pubsubsse.backends.redis import RedisTransport, _at


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://10.0.0.5:7000/0", "redis://10.0.0.6:7003/0"),
        (
            "rediss://app:secret@10.0.0.5:7000/0?ssl_cert_reqs=none",
            "rediss://app:secret@10.0.0.6:7003/0?ssl_cert_reqs=none",
        ),
        ("redis://:secret@node-a/0", "redis://:secret@10.0.0.6:7003/0"),
    ],
)
def test_a_node_is_reached_with_the_urls_scheme_credentials_and_options(url, expected):
    assert _at(url, "10.0.0.6", 7003) == expected


def test_an_ipv6_node_is_bracketed():
    assert _at("redis://[::1]:7000/0", "fe80::2", 7001) == "redis://[fe80::2]:7001/0"


def test_on_a_cluster_every_key_shares_one_hash_tag_and_elsewhere_keys_are_left_alone():
    assert RedisTransport("redis://127.0.0.1:1/0", key="app:log", cluster=True).key == "{app:log}"
    assert RedisTransport("redis://127.0.0.1:1/0", key="{app}:log", cluster=True).key == "{app}:log"
    assert RedisTransport("redis://127.0.0.1:1/0", key="app:log").key == "app:log"
