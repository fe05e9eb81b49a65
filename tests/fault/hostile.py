"""A hostile PLC: the CSTR twin behind a proxy that mutates its replies from a seed, driving
the real daemon (a subprocess), and the invariant checked after every case.

The proxy forwards the gateway's requests untouched and rewrites the server's replies:
Modbus TCP frames (MBAP header + PDU) and OPC UA secure-channel messages (security policy
None: the ReadResponse and WriteResponse are decoded with asyncua's own binary codec,
mutated and encoded again). What a case may do to a reply (``MUTATIONS``): change the
number of results or registers, a value's type or status, a function code, an exception
code, a length or byte count, a transaction or unit id, a timestamp, the value itself
(to extremes), replace the reply with junk, truncate or duplicate it, delay it, or cut
the connection.

One case: the gateway in AUTO, a mutation kind with a probability per reply for a short
window, then the proxy passes everything again. The invariant, checked after the window:

- the daemon is still running (it never exits on what a peer sends);
- either it is still cycling (AUTO, FALLBACK or MANUAL) and, once the replies are honest
  again, reads the twin's values correctly (fresh, good, equal to the twin's image), or it
  is latched in ESTOP with the safe outputs at the twin and the trip's cause on record;
- then it is put back in AUTO by the operator's path (reset, start) for the next case.

At the end: SIGTERM stops the daemon with exit 0, the audit log verifies, every trip the
cases saw has its record, and the daemon's log holds no traceback.

``python -m tests.fault.hostile --protocol modbus --cases 5000 --seed 7`` is the soak
(docs/safety.md: its last figures and how to rerun a failing seed); the tests run a
bounded number of cases (tests/fault/test_fuzz_peers.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import struct
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import nodeid_from_binary, nodeid_to_binary, struct_from_binary, struct_to_binary

from edgewarden.data import EXAMPLES, MODELS
from edgewarden.gateway.audit.verify import iter_records, verify
from edgewarden.gateway.ops.control import send_command
from edgewarden.simulators.twin import Twin
from tests.helpers import control_status, wait_for, write_config

SAFE = (200.0, 0.0)
OBSERVED = ("T", "CA", "Tj")  # compared with the twin's image once the replies are honest again
TOLERANCE = {"T": 0.5, "CA": 0.01, "Tj": 0.5}
# every reply mutation; "any" picks one per reply
MUTATIONS: dict[str, tuple[str, ...]] = {
    "modbus": ("fewer", "more", "bytecount", "function", "exception", "length", "tid", "uid", "values", "junk",
               "truncate", "duplicate", "delay", "disconnect", "any"),
    "opcua": ("fewer", "more", "none", "variant", "status", "service", "timestamp", "extreme", "garbage",
              "truncate", "duplicate", "delay", "disconnect", "any"),
}
_READ_RESPONSE = ua.FourByteNodeId(ua.ObjectIds.ReadResponse_Encoding_DefaultBinary)
_WRITE_RESPONSE = ua.FourByteNodeId(ua.ObjectIds.WriteResponse_Encoding_DefaultBinary)


class Disconnect(Exception):
    """The mutation is to cut the connection."""


# ---- the proxy --------------------------------------------------------------------------
class HostileProxy:
    """Loopback TCP proxy; ``mutation`` (None: honest) and ``probability`` set per case."""

    def __init__(self, protocol: str, upstream: tuple[str, int]) -> None:
        self.protocol = protocol
        self.upstream = upstream
        self.port = 0
        self.mutation: str | None = None
        self.probability = 1.0
        self.rng = random.Random(0)
        self.mutated: Counter[str] = Counter()
        self.refuse_writes_at: set[int] = set()  # Modbus: FC16 replies for these addresses become exception 2
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._honest = asyncio.Event()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def honest(self) -> None:
        """Honest replies from now on: a reply held back by a delay goes out at once."""
        self.mutation = None
        self._honest.set()

    def hostile(self, mutation: str, probability: float, rng: random.Random) -> None:
        self.mutation, self.probability, self.rng = mutation, probability, rng
        self._honest.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        mine = [writer]
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            mine.append(up_writer)
            self._writers.update(mine)
            await asyncio.gather(self._forward(reader, up_writer), self._replies(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError, Disconnect):
            pass
        finally:
            for w in mine:
                self._writers.discard(w)
                w.transport.abort()
            self._tasks.discard(task)

    @staticmethod
    async def _forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if writer.is_closing():
                raise Disconnect
            writer.write(data)
        writer.transport.abort()

    async def _replies(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frame = self._modbus_frame if self.protocol == "modbus" else self._opcua_frame
        while True:
            data = await frame(reader)
            if self.refuse_writes_at and data[7:8] == b"\x10" and struct.unpack(">H", data[8:10])[0] in self.refuse_writes_at:
                data = _mbap(*struct.unpack(">H", data[:2]), data[6], b"\x90\x02")  # ILLEGAL_ADDRESS
            kind = self.mutation
            if kind is not None and self._mutable(data) and self.rng.random() < self.probability:
                if kind == "any":
                    kind = self.rng.choice(MUTATIONS[self.protocol][:-1])
                self.mutated[kind] += 1
                if kind == "disconnect":
                    raise Disconnect
                if kind == "delay":
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._honest.wait(), self.rng.uniform(0.05, 1.0))
                elif kind == "duplicate":
                    writer.write(data)
                elif kind == "truncate":
                    data = data[:self.rng.randrange(1, len(data))]
                else:
                    data = (_mutate_modbus if self.protocol == "modbus" else _mutate_opcua)(data, kind, self.rng)
            if writer.is_closing():
                raise Disconnect
            writer.write(data)

    @staticmethod
    async def _modbus_frame(reader: asyncio.StreamReader) -> bytes:
        head = await reader.readexactly(6)
        (length,) = struct.unpack(">H", head[4:6])
        return head + await reader.readexactly(length)

    @staticmethod
    async def _opcua_frame(reader: asyncio.StreamReader) -> bytes:
        head = await reader.readexactly(8)
        (size,) = struct.unpack("<I", head[4:8])
        return head + await reader.readexactly(size - 8)

    def _mutable(self, data: bytes) -> bool:
        if self.protocol == "modbus":
            return True  # every reply answers a read or a write
        if data[:4] != b"MSGF":
            return False
        try:
            typeid = nodeid_from_binary(Buffer(data[24:]))
        except Exception:  # noqa: BLE001 - not a message this proxy understands: passed on
            return False
        return typeid in (_READ_RESPONSE, _WRITE_RESPONSE)


# ---- Modbus reply mutations ----------------------------------------------------------------
def _mbap(tid: int, uid: int, pdu: bytes, length: int | None = None) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1 if length is None else length, uid) + pdu


def _mutate_modbus(frame: bytes, kind: str, rng: random.Random) -> bytes:
    tid, _, length, uid = struct.unpack(">HHHB", frame[:7])
    pdu = frame[7:]
    fc = pdu[0]
    reads = fc in (1, 2, 3, 4)
    if kind in ("fewer", "more") and reads and len(pdu) > 2:  # a consistent frame, the wrong count
        data = pdu[2:]
        step = 1 if fc in (1, 2) else 2
        have = len(data) // step
        n = rng.randrange(0, have) if kind == "fewer" else have + rng.choice([1, 2, 8])
        data = (data * 9)[:n * step]
        return _mbap(tid, uid, bytes([fc, len(data)]) + data)
    if kind == "bytecount" and reads and len(pdu) > 1:
        return _mbap(tid, uid, bytes([fc, rng.randrange(256)]) + pdu[2:])
    if kind == "function":
        other = rng.choice([f for f in (0, 1, 2, 3, 4, 5, 6, 15, 16, 0x2B, 0x7F, 0x81, 0x83, 0x84, 0x90, 0xFF) if f != fc])
        return _mbap(tid, uid, bytes([other]) + (pdu[1:] if other < 0x80 else bytes([rng.randrange(256)])))
    if kind == "exception":
        return _mbap(tid, uid, bytes([fc | 0x80, rng.choice([0, 1, 2, 3, 4, 5, 6, 10, 11, 255])]))
    if kind == "length":
        return _mbap(tid, uid, pdu, length=max(0, length + rng.choice([-3, -1, 1, 2, 7])))
    if kind == "tid":
        return _mbap(tid ^ rng.randrange(1, 65536), uid, pdu)
    if kind == "uid":
        return _mbap(tid, rng.choice([u for u in (0, 2, 17, 255) if u != uid]), pdu)
    if kind == "values" and reads and len(pdu) > 2:
        return _mbap(tid, uid, pdu[:2] + rng.randbytes(len(pdu) - 2))
    if kind == "junk":
        return rng.randbytes(rng.randrange(1, 40))
    return frame


# ---- OPC UA reply mutations ----------------------------------------------------------------
def _variant(rng: random.Random) -> ua.Variant:
    return rng.choice([
        ua.Variant(True, ua.VariantType.Boolean), ua.Variant("350.0", ua.VariantType.String),
        ua.Variant(2**40, ua.VariantType.Int64), ua.Variant([1.0, 2.0], ua.VariantType.Double),
        ua.Variant(None, ua.VariantType.Null), ua.Variant(b"\x00\x01", ua.VariantType.ByteString),
        ua.Variant(datetime(2020, 1, 1, tzinfo=UTC), ua.VariantType.DateTime),
        ua.Variant(350, ua.VariantType.Int32), ua.Variant(1.5, ua.VariantType.Float),
    ])


def _mutate_results(results: list[Any], kind: str, rng: random.Random, read: bool) -> list[Any]:
    if kind == "fewer":
        return results[:rng.randrange(len(results))] if results else results
    if kind == "more":
        return results + results[:rng.randrange(1, len(results) + 1)]
    if kind == "none" or not results:
        return []
    k = rng.randrange(len(results))
    if not read:  # a WriteResponse: one StatusCode per node
        if kind in ("status", "variant", "extreme", "timestamp"):
            results[k] = ua.StatusCode(rng.choice([ua.StatusCodes.BadTypeMismatch, ua.StatusCodes.BadNotWritable,
                                                   ua.StatusCodes.UncertainLastUsableValue, rng.randrange(2**32)]))
        return results
    dv = results[k]
    if kind == "variant":
        dv.Value = _variant(rng)
    elif kind == "status":
        dv.StatusCode = ua.StatusCode(rng.choice([ua.StatusCodes.BadInternalError, ua.StatusCodes.BadNodeIdUnknown,
                                                  ua.StatusCodes.UncertainLastUsableValue, 0x00300000,
                                                  rng.randrange(2**32)]))
    elif kind == "timestamp":
        stamp = rng.choice([None, datetime(1601, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC),
                            datetime(1970, 1, 1, tzinfo=UTC)])
        dv.SourceTimestamp = stamp
        dv.ServerTimestamp = rng.choice([None, stamp])
    elif kind == "extreme":
        dv.Value = ua.Variant(rng.choice([1.7e308, -1.7e308, float("inf"), float("-inf"), float("nan"), 5e-324,
                                          3.5e38, -0.0]), ua.VariantType.Double)
    return results


def _mutate_opcua(chunk: bytes, kind: str, rng: random.Random) -> bytes:
    head, body = chunk[:24], chunk[24:]
    typeid = nodeid_from_binary(Buffer(body))  # (asyncua's response classes carry it as their TypeId)
    if kind == "garbage":
        keep = len(nodeid_to_binary(typeid))
        body = body[:keep] + rng.randbytes(len(body) - keep)
    else:
        read = typeid == _READ_RESPONSE
        resp = struct_from_binary(ua.ReadResponse if read else ua.WriteResponse, Buffer(body))
        if kind == "service":
            resp.ResponseHeader.ServiceResult = ua.StatusCode(rng.choice(
                [ua.StatusCodes.BadInternalError, ua.StatusCodes.BadTooManyOperations, ua.StatusCodes.BadTimeout]))
        else:
            resp.Results = _mutate_results(list(resp.Results), kind, rng, read)
        body = struct_to_binary(resp)
    return head[:4] + struct.pack("<I", 24 + len(body)) + head[8:] + body


# ---- the runner --------------------------------------------------------------------------
@dataclass
class Report:
    protocol: str
    seed: int
    cases: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)  # "ok", "trip:<code>", "manual", ...
    mutated: Counter[str] = field(default_factory=Counter)  # replies mutated, per kind
    failures: list[str] = field(default_factory=list)  # invariant violations, each with its case
    exit_code: int | None = None
    audit_ok: bool | None = None  # None: not verified yet (the daemon still runs)
    tracebacks: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures and self.exit_code == 0 and self.audit_ok is True and not self.tracebacks

    def summary(self) -> str:
        trips = Counter({k: v for k, v in self.outcomes.items() if k.startswith("trip:")})
        return (f"{self.protocol} seed {self.seed}: {self.cases} cases in {self.seconds:.0f} s; "
                f"{sum(self.mutated.values())} replies mutated; outcomes {dict(self.outcomes.most_common())}; "
                f"trips {sum(trips.values())}; failures {len(self.failures)}; exit {self.exit_code}; "
                f"audit {'not verified yet' if self.audit_ok is None else 'verifies' if self.audit_ok else 'FAILS'}; "
                f"tracebacks in the daemon's log {self.tracebacks}")


def _config(tmp: Path, protocol: str, port: int) -> Path:
    fast = {r"^cycle_hz = 10.0": "cycle_hz = 20.0", r"^comms_timeout_ms = 1000": "comms_timeout_ms = 500"}
    if protocol == "modbus":
        return write_config(tmp, policy=MODELS / "cstr_baseline.onnx", example=EXAMPLES / "cstr_modbus.toml",
                            modbus_port=port, replace={**fast, r"^timeout_s = 0.5": "timeout_s = 0.3",
                                                       r"^reconnect_min_s = 0.2": "reconnect_min_s = 0.05",
                                                       r"^reconnect_max_s = 5.0": "reconnect_max_s = 0.4"})
    return write_config(tmp, policy=MODELS / "cstr_baseline.onnx", url=f"opc.tcp://127.0.0.1:{port}",
                        replace={**fast, r"^timeout_s = 2.0": "timeout_s = 0.5\nreconnect_min_s = 0.05\n"
                                                                "reconnect_max_s = 0.4"})


class Daemon:
    """``edgewarden run`` as systemd runs it, its log in a file."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log_path = config, log
        self.sock = config.parent / "var" / "control.sock"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        from edgewarden.gateway.config import load_config

        self.sock = load_config(self.config).settings.control.socket
        log = self.log_path.open("wb")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edgewarden.gateway.cli", "run", "--config", str(self.config),
            stdout=log, stderr=log, env={**os.environ, "NOTIFY_SOCKET": ""})
        log.close()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def status(self) -> dict[str, Any]:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                return await control_status(self.sock)
        return {}

    async def cmd(self, cmd: str, **kw: Any) -> dict[str, Any]:
        async with asyncio.timeout(5.0):
            return await send_command(self.sock, {"cmd": cmd, "actor": "fuzz", **kw})

    async def stop(self) -> int:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), 20)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            return -9


async def _values_correct(d: Daemon, twin: Twin) -> str:
    """'' when the daemon's values are fresh, good and the twin's; else what is wrong."""
    st = await d.status()
    if not st:
        return "no status"
    tags = {t["name"]: t for t in st["tags"]}
    for name in OBSERVED:
        row, want = tags[name], float(twin.image[name])
        if row["quality"] != "GOOD" or row["value"] is None or abs(row["value"] - want) > TOLERANCE[name]:
            return f"{name} reads {row['value']} ({row['quality']}), the twin has {want:.3f}"
    return ""


async def _to_auto(d: Daemon, twin: Twin) -> None:
    """Back to AUTO by the operator's path, whatever happens on the way (a late reply of the
    last case may trip it again): e-stop from MANUAL or FALLBACK, reset from ESTOP (the
    PLC's own dead-man reset first), start from READY, until it is in AUTO."""

    async def step() -> bool:
        mode = (await d.status()).get("mode")
        if mode == "AUTO":
            return True
        if mode in ("MANUAL", "FALLBACK"):
            await d.cmd("estop", reason="fuzz: next case from a known state")
        elif mode == "ESTOP":
            if twin.image["watchdog_tripped"]:
                twin.image.write("reset_cmd", True)
            await d.cmd("reset", reason="fuzz case")
        elif mode == "READY":
            await d.cmd("start")
        return False

    await wait_for(step, "AUTO by reset and start", timeout=30)


async def _case(d: Daemon, twin: Twin, proxy: HostileProxy, report: Report, index: int, window_s: float) -> None:
    rng = random.Random(f"{report.seed}:{index}")
    kind = rng.choice(MUTATIONS[proxy.protocol])
    probability = rng.choice([1.0, 0.5, 0.2])
    name = f"case {index} (seed {report.seed}, {kind}, p={probability})"
    await _to_auto(d, twin)  # a known state: AUTO, the last case's replies all delivered
    trips_before = int((await d.status()).get("trips", 0))
    proxy.hostile(kind, probability, rng)
    await asyncio.sleep(window_s)
    proxy.honest()
    if not d.running:
        report.failures.append(f"{name}: the daemon exited ({d.proc.returncode if d.proc else '?'})")
        return

    async def settled() -> dict[str, Any] | None:
        st = await d.status()
        if not st:
            return None
        if st["mode"] == "ESTOP":
            safe = (float(twin.image["coolant_flow_sp"]), float(twin.image["feed_flow_sp"])) == SAFE
            return st if safe and st.get("last_trip") else None
        return st if not await _values_correct(d, twin) else None

    try:
        # the honest replies resume: within the comms timeout and a reconnect, a judgement
        st = await wait_for(settled, "correct values, or ESTOP with the safe outputs at the twin", timeout=10,
                            interval=0.05)
        if st["mode"] != "ESTOP":  # still cycling: and after one more comms timeout, still correct
            await asyncio.sleep(0.6)
            st = await wait_for(settled, "a settled state", timeout=10, interval=0.05)
    except AssertionError as exc:
        st = await d.status()
        report.failures.append(f"{name}: {exc}; mode {st.get('mode')}, "
                               f"{await _values_correct(d, twin) or 'values correct'}, twin setpoints "
                               f"{(twin.image['coolant_flow_sp'], twin.image['feed_flow_sp'])}")
        st = st or {}
    mode = st.get("mode", "?")
    if mode == "ESTOP":
        code = (st.get("last_trip") or {}).get("code", "?")
        report.outcomes[f"trip:{code.split(':')[0]}" + (f":{code.split(':')[1]}" if code.startswith("internal") else "")] += 1
        if int(st.get("trips", 0)) <= trips_before:
            report.failures.append(f"{name}: ESTOP without a new trip on record")
    else:
        report.outcomes["ok" if mode == "AUTO" else mode.lower()] += 1
    if mode != "AUTO":
        try:
            await _to_auto(d, twin)
        except AssertionError as exc:
            report.failures.append(f"{name}: could not return to AUTO: {exc}")


@dataclass
class Plant:
    """The twin, the hostile proxy in front of it and the daemon behind that, in AUTO."""

    protocol: str
    twin: Twin
    proxy: HostileProxy
    daemon: Daemon
    tmp: Path
    exit_code: int | None = None  # the daemon's, once stopped

    def applied(self) -> tuple[float, float]:
        """What the plant really gets (the PLC's outputs: the safe ones on its own dead-man too)."""
        return float(self.twin.image["coolant_flow"]), float(self.twin.image["feed_flow"])

    def trips(self) -> list[dict[str, Any]]:
        return [r.payload for r in iter_records(self.tmp / "audit") if r.payload["kind"] == "trip"]

    def problems(self) -> list[str]:
        """After the stop: what the invariant forbids at the end of any run."""
        out = [] if self.exit_code == 0 else [f"the daemon exited {self.exit_code} on SIGTERM"]
        result = verify(self.tmp / "audit")
        if not result.ok:
            out.append(f"the audit log does not verify: {result.error}")
        text = self.daemon.log_path.read_text(errors="replace") if self.daemon.log_path.exists() else ""
        if "Traceback (most recent call last)" in text:
            out.append("a traceback in the daemon's log")
        return out


@contextlib.asynccontextmanager
async def hostile_plant(protocol: str, tmp: Path) -> AsyncIterator[Plant]:
    """Everything started here is stopped on the way out (the daemon by SIGTERM)."""
    twin = Twin("cstr", opcua=("127.0.0.1", 0), modbus=("127.0.0.1", 0) if protocol == "modbus" else None,
                watchdog_ms=500)
    await twin.start()
    server = twin.modbus if protocol == "modbus" else twin.opcua
    assert server is not None
    proxy = HostileProxy(protocol, ("127.0.0.1", int(server.port or 0)))
    await proxy.start()
    plant = Plant(protocol, twin, proxy, Daemon(_config(tmp, protocol, proxy.port), tmp / "daemon.log"), tmp)
    try:
        await plant.daemon.start()
        await wait_for(lambda: _mode_is(plant.daemon, "READY"), "READY", timeout=60)
        await _to_auto(plant.daemon, twin)
        yield plant
    finally:
        proxy.honest()
        proxy.refuse_writes_at.clear()
        if plant.daemon.proc is not None:
            plant.exit_code = await plant.daemon.stop()
        await proxy.close()
        await twin.stop()


async def run(protocol: str, seed: int, cases: int, tmp: Path, window_s: float = 0.4,
              progress_every: int = 0) -> Report:
    """``cases`` cases against one daemon (a summary line every ``progress_every`` cases)."""
    report = Report(protocol, seed)
    t0 = time.monotonic()
    async with hostile_plant(protocol, tmp) as plant:
        report.mutated = plant.proxy.mutated
        for index in range(cases):
            if not plant.daemon.running:
                break
            await _case(plant.daemon, plant.twin, plant.proxy, report, index, window_s)
            report.cases += 1
            if progress_every and report.cases % progress_every == 0:
                report.seconds = time.monotonic() - t0
                print("progress:", report.summary(), flush=True)
    report.exit_code = plant.exit_code
    problems = plant.problems()
    report.audit_ok = not any(p.startswith("the audit log") for p in problems)
    report.tracebacks = sum(p.startswith("a traceback") for p in problems)
    if report.audit_ok:
        expected = sum(v for k, v in report.outcomes.items() if k.startswith("trip:"))
        if len(plant.trips()) < expected:
            report.failures.append(f"{expected} trips seen, {len(plant.trips())} trip records in the audit log")
    report.seconds = time.monotonic() - t0
    return report


async def _mode_is(d: Daemon, mode: str) -> bool:
    return (await d.status()).get("mode") == mode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Fuzz the daemon with a hostile PLC (the soak mode of "
                                             "tests/fault/test_fuzz_peers.py)")
    ap.add_argument("--protocol", choices=("modbus", "opcua", "both"), default="both")
    ap.add_argument("--cases", type=int, default=1000, help="cases per protocol")
    ap.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    ap.add_argument("--window", type=float, default=0.4, help="seconds of hostile replies per case")
    ap.add_argument("--keep", type=Path, help="keep the config, audit log and daemon log here")
    args = ap.parse_args(argv)
    ok = True
    for protocol in ("modbus", "opcua") if args.protocol == "both" else (args.protocol,):
        work = args.keep / protocol if args.keep else Path(tempfile.mkdtemp(prefix=f"fuzz-{protocol}-"))
        work.mkdir(parents=True, exist_ok=True)
        report = asyncio.run(run(protocol, args.seed, args.cases, work, args.window, progress_every=250))
        print(report.summary())
        print(json.dumps({"mutated": dict(report.mutated)}))
        for failure in report.failures:
            print("FAILED:", failure)
        ok = ok and report.ok
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
