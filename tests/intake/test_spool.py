"""The spool on its own: records survive as written, a torn last record is skipped and said, a segment is drained by
whoever outlives its process and only then, the size is bounded."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from b24bridge.intake import metrics
from b24bridge.intake.spool import HEADER, Spool, SpoolUnavailable


def _sealed(data: bytes) -> bytes:
    return b"sealed:" + data[::-1]


def _unsealed(blob: bytes) -> bytes:
    if not blob.startswith(b"sealed:"):
        raise ValueError("not sealed by us")
    return blob[len(b"sealed:") :][::-1]


def spool(directory: Path, max_bytes: int = 1 << 20) -> Spool:
    return Spool(directory, max_bytes=max_bytes, seal=_sealed, unseal=_unsealed)


def _drain_all(store: Spool) -> list[bytes | None]:
    payloads: list[bytes | None] = []
    for segment in [*store.orphans(), *filter(None, [store.own()])]:
        while records := store.read(segment, 3):
            payloads += [payload for _, payload in records]
            store.advance(segment, records[-1][0], len(records))
        store.release(segment)
    return payloads


async def test_records_come_back_in_order_sealed_on_disk_and_the_segment_goes_when_drained(tmp_path: Path) -> None:
    store = spool(tmp_path)
    for number in range(10):
        await store.append(f"call {number}".encode())
    [segment] = list(tmp_path.glob("*.spool"))
    on_disk = segment.read_bytes()
    assert on_disk.startswith(HEADER) and b"call 3" not in on_disk and b"3 llac" in on_disk  # sealed, not plain
    assert store.busy and store.used_bytes == len(on_disk)
    assert _drain_all(store) == [f"call {number}".encode() for number in range(10)]
    assert not store.busy and list(tmp_path.iterdir()) == []


async def test_concurrent_appends_share_writes(tmp_path: Path) -> None:
    import asyncio

    store = spool(tmp_path)
    before = metrics.SPOOL_APPENDED._value.get()
    await asyncio.gather(*(store.append(f"{n}".encode()) for n in range(200)))
    assert metrics.SPOOL_APPENDED._value.get() - before == 200
    assert sorted(int(p or b"-1") for p in _drain_all(store)) == list(range(200))


async def test_a_torn_last_record_is_skipped_with_a_log_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    writer = spool(tmp_path / "a")
    for number in range(3):
        await writer.append(f"record {number}".encode())
    [path] = list((tmp_path / "a").glob("*.spool"))
    os.close(writer.own().fd)  # type: ignore[union-attr]  # the process "dies": its lock goes with it
    path.write_bytes(path.read_bytes()[:-4])  # the last record cut short, as a crash mid-write leaves it
    torn = metrics.SPOOL_TORN._value.get()
    reader = spool(tmp_path / "a")
    assert _drain_all(reader) == [b"record 0", b"record 1", None]
    assert metrics.SPOOL_TORN._value.get() == torn + 1
    assert not path.exists()


OWNER = textwrap.dedent(
    """
    import asyncio, os, sys, time
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from tests.intake.test_spool import spool

    async def main():
        store = spool(Path(sys.argv[1]))
        await store.append(b"from another process")
        print("written", flush=True)
        if sys.argv[2] == "die":
            os._exit(0)  # no clean-up: the segment is left, unlocked
        time.sleep(60)

    asyncio.run(main())
    """
)


def _owner(directory: Path, mode: str) -> subprocess.Popen[str]:
    script = OWNER.format(tests=str(Path(__file__).resolve().parents[2]))
    process = subprocess.Popen([sys.executable, "-c", script, str(directory), mode], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    for line in process.stdout:  # its log lines (unconfigured structlog prints) come first
        if line.strip() == "written":
            return process
    raise AssertionError("the owner process did not write its record")


@pytest.mark.skipif(sys.platform == "win32", reason="segments are locked with flock")
def test_a_live_process_keeps_its_segment_and_a_dead_ones_is_drained_once(tmp_path: Path) -> None:
    alive = _owner(tmp_path, "live")
    try:
        store = spool(tmp_path)
        assert store.orphans() == []  # its owner is alive and drains it itself
        dead = _owner(tmp_path, "die")
        dead.wait(10)
        [orphan] = store.orphans()
        assert spool(tmp_path).orphans() == []  # one drainer at a time: this one holds it now
        records = store.read(orphan, 10)
        assert [payload for _, payload in records] == [b"from another process"]
        store.advance(orphan, records[-1][0], 1)
        store.release(orphan)
        assert len(list(tmp_path.glob("*.spool"))) == 1  # the live one's
    finally:
        alive.kill()
        alive.wait()
    assert [payload for segment in spool(tmp_path).orphans() for _, payload in spool(tmp_path).read(segment, 10)] == [
        b"from another process"
    ]


async def test_a_full_spool_refuses_and_keeps_nothing_of_the_refused_call(tmp_path: Path) -> None:
    store = spool(tmp_path, max_bytes=200)
    await store.append(b"x" * 50)
    refused = metrics.SPOOL_REFUSED._value.get()
    with pytest.raises(SpoolUnavailable, match="full"):
        await store.append(b"y" * 200)
    assert metrics.SPOOL_REFUSED._value.get() == refused + 1
    assert _drain_all(store) == [b"x" * 50]


async def test_an_unwritable_folder_refuses(tmp_path: Path) -> None:
    (tmp_path / "spool").write_text("a file where the folder should be")
    with pytest.raises(SpoolUnavailable, match="cannot be written"):
        await spool(tmp_path / "spool").append(b"call")
