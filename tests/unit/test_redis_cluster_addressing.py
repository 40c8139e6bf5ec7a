"""How RedisBackend(cluster=True) names its keys and reaches a node other than the URL's."""

from __future__ import annotations

import pytest

from pubsubsse.backends._redis_cluster import at_node as _at
from pubsubsse.backends.redis import RedisTransport


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


def test_a_cluster_url_may_name_several_nodes_to_start_from():
    transport = RedisTransport("rediss://app:secret@10.0.0.5:7000,node-b:7001,[::1]/0?ssl_cert_reqs=none", cluster=True)
    assert transport._nodes == [("10.0.0.5", 7000), ("node-b", 7001), ("::1", 6379)]
    # The first connection goes to the first node, with the URL's scheme, credentials and options.
    kwargs = transport._reader.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["password"]) == ("10.0.0.5", 7000, "secret")
    assert RedisTransport("redis://[::1]:7000,[::2]:7001", cluster=True)._nodes == [("::1", 7000), ("::2", 7001)]


@pytest.mark.parametrize(
    ("url", "cluster", "error"),
    [
        ("redis://app:secret@10.0.0.5:7000,10.0.0.6:7001/0", False, "several nodes"),
        ("redis://10.0.0.5:7000,10.0.0.6:port/0", True, "port"),
        ("redis://10.0.0.5:7000,/0", True, "empty"),
    ],
)
def test_a_url_naming_several_nodes_without_a_cluster_or_a_bad_one_is_refused(url, cluster, error):
    with pytest.raises(ValueError, match=error) as refused:
        RedisTransport(url, cluster=cluster)
    assert "secret" not in str(refused.value)  # messages name the nodes, never the credentials


def test_a_url_with_no_host_is_left_to_redis_py_outside_a_cluster():
    assert RedisTransport("unix:///run/redis.sock?db=1").url == "unix:///run/redis.sock?db=1"
