from __future__ import annotations

import json
import shutil
import time
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from streamrec.infra.errors import StackError
from streamrec.infra.stack import EmbeddedStack, StackConfig, free_port
from streamrec.infra.services import _redis_answers

pytestmark = pytest.mark.integration


@pytest.fixture
def foreign_redis(tmp_path: Path) -> Iterator[int]:
    """A redis-server this test starts itself, standing for one the stack did not start."""
    port = free_port()
    proc = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            if _redis_answers("127.0.0.1", port):
                break
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


def test_up_then_down_leaves_no_process_and_spares_a_foreign_redis(tmp_path: Path, foreign_redis: int) -> None:
    stack = EmbeddedStack(StackConfig.on_free_ports(tmp_path / "stack"))
    records = stack.up()
    pids = {r.name: r.pid for r in records}
    assert set(pids) == {"redis", "broker"}
    assert all(s["answering"] for s in stack.status().values())

    stopped = stack.down()

    assert sorted(stopped) == ["broker", "redis"]
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids.values())
    assert stack.status() == {}
    assert _redis_answers("127.0.0.1", foreign_redis)


def test_port_taken_by_a_foreign_service_is_an_error_naming_the_setting(tmp_path: Path, foreign_redis: int) -> None:
    stack = EmbeddedStack(StackConfig.on_free_ports(tmp_path / "stack", redis_port=foreign_redis))
    with pytest.raises(StackError, match="STREAMREC_STACK__REDIS_PORT"):
        stack.up()
    stack.down()
    assert _redis_answers("127.0.0.1", foreign_redis)


def test_up_is_idempotent(tmp_path: Path) -> None:
    stack = EmbeddedStack(StackConfig.on_free_ports(tmp_path / "stack"))
    try:
        first = {r.name: r.pid for r in stack.up()}
        second = {r.name: r.pid for r in stack.up()}
        assert first == second
    finally:
        stack.down()


async def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()


async def _consume_all(bootstrap: str, topic: str, expect: int) -> list[bytes]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=100)
    await consumer.start()
    got: list[bytes] = []
    try:
        for _ in range(40):
            for records in (await consumer.getmany(timeout_ms=250)).values():
                got.extend(r.value for r in records)
            if len(got) >= expect:
                break
    finally:
        await consumer.stop()
    return got


@pytest.mark.slow
def test_topics_and_data_survive_down_and_up_and_reset_empties_them(tmp_path: Path) -> None:
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient

    config = StackConfig.on_free_ports(tmp_path / "stack")
    sent = [f"m{n}".encode() for n in range(20)]

    async def topics() -> set[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=config.bootstrap_servers)
        await admin.start()
        try:
            return set(await admin.list_topics())
        finally:
            await admin.close()

    stack = EmbeddedStack(config)
    try:
        stack.up()
        asyncio.run(_produce(config.bootstrap_servers, "durable-check", sent))
        stack.down()
        stack.up()
        assert sorted(asyncio.run(_consume_all(config.bootstrap_servers, "durable-check", len(sent)))) == sorted(sent)
        stack.reset()
        stack.up()
        assert "durable-check" not in asyncio.run(topics())
    finally:
        stack.down()


def _alive(pid: int) -> bool:
    return psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE


def test_a_step_of_the_wall_clock_does_not_hide_the_stack_from_down(tmp_path: Path) -> None:
    """A VM restored from a snapshot, or NTP, steps the wall clock and with it every process's
    create_time; `stack down` from another process must still know the services as its own."""
    config = StackConfig.on_free_ports(tmp_path / "stack")
    started = EmbeddedStack(config)
    pids = [r.pid for r in started.up()]
    try:
        state = config.data_dir / "stack.json"
        records = json.loads(state.read_text())
        state.write_text(json.dumps([{**r, "create_time": r["create_time"] - 600.0} for r in records]))

        assert sorted(EmbeddedStack(config).down()) == ["broker", "redis"]  # a new object: no children of its own
        assert not any(_alive(pid) for pid in pids)
    finally:
        started.down()


def test_down_stops_what_it_started_even_when_its_record_no_longer_names_it(tmp_path: Path) -> None:
    """The stack object that started the services holds them as children: when their records
    no longer identify them (as a stepped clock did before records kept the time since boot),
    down() still stops them rather than wait on them forever."""
    config = StackConfig.on_free_ports(tmp_path / "stack")
    stack = EmbeddedStack(config)
    pids = [r.pid for r in stack.up()]
    state = config.data_dir / "stack.json"
    state.write_text(json.dumps([{**r, "create_time": r["create_time"] + 600.0, "since_boot_s": r["since_boot_s"] + 5.0}
                                 for r in json.loads(state.read_text())]))

    assert stack.down() == []  # no record names a running service...
    assert not any(_alive(pid) for pid in pids)  # ...but its own children are stopped
