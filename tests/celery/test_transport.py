"""The ``memguard-fs://`` transport under concurrent producers and consumers in separate processes."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from queue import Empty

from kombu import Connection, Exchange, Queue

import pytest_memguard.celery  # noqa: F401 - registers memguard-fs://
from pytest_memguard.celery.embedded import embedded_app_config

N_PER_PRODUCER = 250


def _connection(folder: str) -> Connection:
    config = embedded_app_config(folder)
    return Connection(config["broker_url"], transport_options=config["broker_transport_options"])


def _produce(folder: str, producer: int) -> None:
    queue = Queue("soak", Exchange("soak"), "soak")
    with _connection(folder) as conn:
        producer_ = conn.Producer(serializer="json")
        for i in range(N_PER_PRODUCER):
            # Large enough bodies that a non-atomic write would be read half-done sooner or later.
            producer_.publish({"id": f"{producer}-{i}", "pad": "x" * 20_000}, exchange=queue.exchange,
                              routing_key="soak", declare=[queue])  # fmt: skip


def _consume(folder: str, out_path: str, expected: int) -> None:
    seen = []
    queue = Queue("soak", Exchange("soak"), "soak")
    with _connection(folder) as conn, conn.SimpleQueue(queue) as simple:
        idle = 0
        while idle < 40:  # 40 x 50 ms with nothing left: the producers are done
            try:
                message = simple.get(timeout=0.05)
            except Empty:
                idle += 1
                continue
            idle = 0
            seen.append(message.payload["id"])
            message.ack()
    with open(out_path, "w") as f:
        f.write("\n".join(seen))


def test_two_producers_two_consumers_deliver_every_message_exactly_once(tmp_path):
    folder = str(tmp_path / "broker")
    _connection(folder).close()
    ctx = multiprocessing.get_context("fork")
    outs = [str(tmp_path / f"consumer-{n}.txt") for n in range(2)]
    consumers = [ctx.Process(target=_consume, args=(folder, out, 2 * N_PER_PRODUCER)) for out in outs]
    producers = [ctx.Process(target=_produce, args=(folder, n)) for n in range(2)]
    for p in consumers + producers:
        p.start()
    try:
        for p in producers + consumers:
            p.join(120)
        assert all(p.exitcode == 0 for p in producers + consumers), [p.exitcode for p in producers + consumers]
    finally:
        for p in producers + consumers:
            if p.is_alive():
                p.kill()
                p.join(5)
    received = [line for out in outs for line in Path(out).read_text().split("\n") if line]
    assert len(received) == 2 * N_PER_PRODUCER  # none lost, none twice
    assert set(received) == {f"{p}-{i}" for p in range(2) for i in range(N_PER_PRODUCER)}
    leftovers = [n for n in os.listdir(os.path.join(folder, "messages")) if n.endswith(".msg")]
    assert leftovers == []
