from __future__ import annotations

import shutil
import time
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from infra.errors import StackError
from infra.stack import EmbeddedStack, StackConfig, free_port
from infra.services import _redis_answers

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
    stack = EmbeddedStack(StackConfig(data_dir=tmp_path / "stack", broker_port=free_port(), redis_port=free_port()))
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
    stack = EmbeddedStack(StackConfig(data_dir=tmp_path / "stack", broker_port=free_port(), redis_port=foreign_redis))
    with pytest.raises(StackError, match="STREAMREC_STACK__REDIS_PORT"):
        stack.up()
    stack.down()
    assert _redis_answers("127.0.0.1", foreign_redis)


def test_up_is_idempotent(tmp_path: Path) -> None:
    stack = EmbeddedStack(StackConfig(data_dir=tmp_path / "stack", broker_port=free_port(), redis_port=free_port()))
    try:
        first = {r.name: r.pid for r in stack.up()}
        second = {r.name: r.pid for r in stack.up()}
        assert first == second
    finally:
        stack.down()


@pytest.mark.slow
def test_durable_stack_keeps_topics_across_a_restart(tmp_path: Path) -> None:
    import asyncio

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    config = StackConfig(data_dir=tmp_path / "stack", broker_port=free_port(), redis_port=free_port(),
                         s3_port=free_port(), durable=True)

    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=config.bootstrap_servers)
        await producer.start()
        for n in range(20):
            await producer.send_and_wait("durable-check", f"m{n}".encode())
        await producer.stop()

    async def consume() -> list[bytes]:
        consumer = AIOKafkaConsumer("durable-check", bootstrap_servers=config.bootstrap_servers,
                                    auto_offset_reset="earliest", fetch_max_wait_ms=20)
        await consumer.start()
        got: list[bytes] = []
        try:
            for _ in range(40):
                for records in (await consumer.getmany(timeout_ms=250)).values():
                    got.extend(r.value for r in records)
                if len(got) >= 20:
                    break
        finally:
            await consumer.stop()
        return got

    stack = EmbeddedStack(config)
    try:
        stack.up()
        asyncio.run(produce())
        stack.down()
        stack.up()
        assert sorted(asyncio.run(consume())) == sorted(f"m{n}".encode() for n in range(20))
    finally:
        stack.down()
