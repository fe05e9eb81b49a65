"""``discover modbus --from-csv``: a register list (Modbus cannot be browsed) as a draft
that, with its decisions made, runs read-only against a real pymodbus server; bad rows
are all named, by line, and nothing is written."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from edgewarden.gateway.cli import main
from edgewarden.simulators.harness import wait_for
from edgewarden.simulators.peers import ModbusServer
from tests.fault.harness import running_gateway

REGISTERS = """\
# Line 3 pumps, from the PLC program's I/O list
name,table,address,datatype,scale,offset,units,writable,low,high,unit,word_order,description
Flow Rate,input,0,uint16,0.1,,m3/h,,0,500,,,FT-301
Pressure,input,1,int16,0.01,,bar,no,-1,20,,,PT-302
Speed SP,holding,10,uint16,0.1,,%,yes,0,100,,,VFD-1 speed setpoint
Alive,holding,20,uint16,,,,yes,,,,,PLC dead-man counter
Running,discrete,0,,,,,,,,,,pump running
"""


def test_a_register_list_becomes_a_draft_and_bad_rows_are_named(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "line3.csv"
    csv.write_text(REGISTERS)
    draft = tmp_path / "plant.toml"
    assert main(["discover", "modbus", "--from-csv", str(csv), "--host", "10.0.0.7", "-o", str(draft)]) == 0
    assert "5 tag(s), 2 writable, from the register list" in capsys.readouterr().err
    text = draft.read_text()
    assert "[tags.Flow_Rate]" in text and 'table = "input"' in text and "scale = 0.1" in text
    assert 'heartbeat_tag = "Alive"' in text and 'actions = ["Speed_SP"]' in text
    assert 'host = "10.0.0.7"' in text
    assert main(["config", "check", str(draft)]) == 78
    assert "safety.actions.Speed_SP.safe: required key is missing" in capsys.readouterr().err

    bad = tmp_path / "bad.csv"
    bad.write_text("# exported from the PLC program\nname, table, address, writable\nA,holding,x,yes\n"
                   "B,input,3,yes\n\nC,coils,1,\n")
    assert main(["discover", "modbus", "--from-csv", str(bad), "-o", str(tmp_path / "no.toml")]) == 78
    err = capsys.readouterr().err  # lines as an editor counts them: comments and blank lines included
    assert "3 bad row(s), nothing written" in err and f"{bad}:3: A: address 'x' is not an integer" in err
    assert f"{bad}:4: B: input registers are read-only" in err and f"{bad}:6: C: table 'coils'" in err
    latin = tmp_path / "latin.csv"
    latin.write_bytes("name,table,address,units\nT,input,0,°C\n".encode("cp1252"))
    assert main(["discover", "modbus", "--from-csv", str(latin)]) == 78
    assert "not UTF-8 text" in capsys.readouterr().err
    assert not (tmp_path / "no.toml").exists()
    assert main(["discover", "modbus", "-o", str(tmp_path / "no.toml")]) == 1
    assert "needs --from-csv FILE" in capsys.readouterr().err


@pytest.mark.anyio
async def test_the_draft_reads_a_real_device_in_monitor(tmp_path: Path) -> None:
    server = ModbusServer()
    await server.start()
    try:
        server.set_regs("input", 0, [1234, 150])
        server.set_regs("holding", 10, [455])
        csv = tmp_path / "line3.csv"
        csv.write_text(REGISTERS)
        draft = tmp_path / "plant.toml"
        assert await asyncio.to_thread(main, ["discover", "modbus", "--from-csv", str(csv), "--port",
                                              str(server.port), "-o", str(draft)]) == 0
        text = re.sub(r"^# safe = \.\.\. .*$", "safe = 0.0", draft.read_text(), flags=re.M)
        draft.write_text(re.sub(r"^observations = .*$", 'observations = ["Flow_Rate", "Pressure"]', text,
                                flags=re.M) + "\n[metrics]\nport = 0\n")
        async with running_gateway(draft) as gw:
            await wait_for(lambda: gw.loop.modes.mode.name == "READY", "READY")
            values = dict(zip(gw.loop.tags.readable, gw.loop.snap.values.tolist(), strict=True))
            assert values["Flow_Rate"] == pytest.approx(123.4) and values["Pressure"] == pytest.approx(1.5)
            assert values["Speed_SP"] == pytest.approx(45.5)
        assert server.get_regs("holding", 10, 1) == [455] and server.get_regs("holding", 20, 1) == [0]
    finally:
        await server.stop()
