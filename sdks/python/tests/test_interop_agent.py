"""The interop agent's command line (tests/interop/README.md), end to end."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from conftest import Server

SDK = Path(__file__).resolve().parents[1]


def agent(*args: str) -> tuple[int, list[dict[str, Any]], str]:
    done = subprocess.run(
        [str(SDK / "interop.sh"), *args], capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": ""},
    )
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()], done.stderr


def test_produce_then_consume_with_poison_and_trace_ids(server: Server) -> None:
    e = server.endpoint
    rc, produced, err = agent("produce", "--endpoint", e, "--topic", "agent-t", "--run-id", "r",
                              "--count", "4", "--poison-seq", "2")
    assert rc == 0, err
    assert [p["seq"] for p in produced] == [0, 1, 2, 3]
    rc, consumed, err = agent("consume", "--endpoint", e, "--topic", "agent-t", "--subscription", "s",
                              "--type", "shared", "--count", "3", "--fail-poison",
                              "--max-attempts", "1", "--timeout-s", "20")
    assert rc == 0, err
    # seq 0 is a default, omitted from the canonical JSON.
    by_seq = {int(c["event"].get("seq", 0)): c for c in consumed}
    for p in produced:
        c = by_seq[p["seq"]]
        assert c["trace_id"] == p["trace_id"] and c["id"] == p["id"]
        assert c["attributes"]["interop-producer"] == "python"
    assert by_seq[1]["event"]["big"] == "18446744073709551614"
    assert by_seq[2]["event"]["poison"] is True


def test_bad_input_reports_the_error_code(server: Server) -> None:
    rc, out, err = agent("bad-input", "--endpoint", server.endpoint, "--case", "oversize",
                         "--topic", "agent-big")
    assert rc == 0, err
    assert out == [{"case": "oversize", "error_code": "ERROR_CODE_EVENT_TOO_LARGE", "grpc_code": 3,
                    "message": out[0]["message"]}]


def test_consume_times_out_with_exit_1(server: Server) -> None:
    rc, _, err = agent("consume", "--endpoint", server.endpoint, "--topic", "agent-empty",
                       "--subscription", "s", "--type", "exclusive", "--count", "1",
                       "--timeout-s", "0.5")
    assert rc == 1 and "timed out" in err
