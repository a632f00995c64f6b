"""bench/run.py, the send path's benchmark, run small: every configuration runs to the end and the
report shows its ratios. The figures themselves belong in docs/performance.md, never in a test."""

from __future__ import annotations

import re
import smtplib
import subprocess
import sys

import pytest
from processes import ROOT

from digest.demo.catcher import free_port

BENCH = ROOT / "bench"


def bench(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def measured(output: str, name: str, sent: int) -> bool:
    line = rf"^round 1  {re.escape(name)} +[\d,]+ digests/s  {sent:,} in [\d.]+ s$"
    return re.search(line, output, re.MULTILINE) is not None


def test_one_round_measures_every_configuration_and_prints_the_ratios() -> None:
    output = bench("--readers", "300", "--rounds", "1", "--naive-readers", "20")
    assert measured(output, "digest", 300)
    assert measured(output, "naive", 20)
    assert measured(output, "2×SQLite", 300)
    assert measured(output, "2×PostgreSQL", 300)
    assert re.search(r"^  digest ÷ naive: [\d.]+× \(", output, re.MULTILINE)
    if output.startswith("sink: smtp-sink"):  # Postfix's tools are installed here
        assert measured(output, "smtp-source", 300)
        assert re.search(r"^  2×PostgreSQL ÷ smtp-source: [\d.]+ % \(", output, re.MULTILINE)


def test_with_topics_readers_hold_eight_topic_sets_and_those_of_no_seeded_category_get_none() -> (
    None
):
    output = bench("--readers", "240", "--rounds", "1", "--only", "digest", "--topics")
    assert "readers in 8 topic sets" in output
    assert measured(output, "digest", 210)  # the 30 readers of "public health" are skipped


def test_the_latency_mode_sends_through_the_delaying_relay_at_each_connection_count() -> None:
    output = bench(
        "--latency", "5", "--readers", "40", "--rounds", "1", "--latency-connections", "2,8"
    )
    assert "through a relay 5 ms away each way" in output
    assert measured(output, "digest, 2 conn.", 40)
    assert measured(output, "digest, 8 conn.", 40)


@pytest.mark.parametrize(("flags", "advertised"), [((), True), (("--no-pipelining",), False)])
def test_the_sink_advertises_pipelining_unless_told_not_to(
    flags: tuple[str, ...], advertised: bool
) -> None:
    port = free_port()
    command = [sys.executable, str(BENCH / "sink.py"), str(port), *flags]
    with subprocess.Popen(command, stdout=subprocess.PIPE) as sink:
        try:
            assert sink.stdout is not None and sink.stdout.readline() == b"ready\n"
            with smtplib.SMTP("127.0.0.1", port) as client:
                client.ehlo()
                assert client.has_extn("pipelining") is advertised
        finally:
            sink.terminate()
