"""Fixtures for the cluster-mode tests (tests/e2e/cluster/): a real NATS
cluster of three nats-servers with JetStream on 127.0.0.1 (natscluster.py).

Every test in this directory is skipped when nats-server is not installed.
`nats_cluster` hands out one cluster shared by the whole session, healed
before each test (paused servers continued, stopped ones restarted), so a
test may break it freely. `nats_cluster_factory(**kw)` makes private ones
(other settings, e.g. extra_conf="max_pending: 1MB"), closed after the test.
At the end of the session, no server process any of them started may remain."""
import pytest

from .natscluster import NatsCluster, find_binary

_made = []  # every cluster the fixtures started


@pytest.fixture(scope="session", autouse=True)
def _nats_cluster_session():
    if not find_binary():
        pytest.skip("nats-server is not installed (Debian 12: apt-get install nats-server, "
                    "which `make test` does through scripts/deps.sh test)")
    yield
    for c in _made:
        c.close()
    left = [p for c in _made for p in c.leftovers()]
    assert not left, f"nats-server processes outlived their cluster: {left}"


def _start(**kw):
    c = NatsCluster(**kw)
    _made.append(c)
    return c.start()


@pytest.fixture(scope="session")
def _shared_cluster():
    c = _start()
    yield c
    c.close()


@pytest.fixture
def nats_cluster(_shared_cluster):
    c = _shared_cluster
    for s in c.servers:
        if s.paused:
            c.resume(s.index)
        if not s.running():
            c.restart(s.index, wait=False)
    c.wait_ready(among=range(c.size))
    return c


@pytest.fixture
def nats_cluster_factory():
    mine = []

    def make(**kw):
        mine.append(_start(**kw))
        return mine[-1]

    yield make
    for c in mine:
        c.close()
        assert not c.leftovers(), c.leftovers()
