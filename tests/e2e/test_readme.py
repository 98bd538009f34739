"""The README's quick start, pasted into a shell, prints what the README shows.

The ```sh block under "## Quick start" is run as one bash session, command by
command, in an empty directory: `cargo run --release --` becomes the binary
under test, everything else runs as written (curl, python3, kcat). The lines
starting `#> ` after a command are what it must print on stdout, line for
line; `…` stands for any text (ids, timestamps). A command shown without
`#> ` lines must print nothing. The quick start binds the default ports
(HTTP 8080, Kafka 9092), so the test fails if something else holds them.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from dataclasses import dataclass, field

import pytest

from harness import REPO_ROOT

CARGO_RUN = "cargo run --release --"
MARK = "@@quickstart-step"


@dataclass
class Step:
    command: str
    expected: list[str] = field(default_factory=list)


def quick_start_block() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "README: no ```sh block under ## Quick start"
    return match.group(1).splitlines()


def parse_steps(lines: list[str]) -> list[Step]:
    steps: list[Step] = []
    pending = ""
    for line in lines:
        if pending:
            pending += "\n" + line
            if not line.endswith("\\"):
                steps.append(Step(pending))
                pending = ""
            continue
        stripped = line.strip()
        if stripped.startswith("#> ") or stripped == "#>":
            assert steps, f"README quick start: output line before any command: {line!r}"
            steps[-1].expected.append(stripped[3:])
        elif not stripped or stripped.startswith("#"):
            continue
        elif line.endswith("\\"):
            pending = line
        else:
            steps.append(Step(line))
    assert not pending, "README quick start: a command ends with a line continuation"
    return steps


def line_pattern(expected: str) -> re.Pattern:
    return re.compile(".*".join(re.escape(part) for part in expected.split("…")))


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def test_parse_steps_reads_commands_and_outputs():
    steps = parse_steps([
        "# a comment", "echo one", "#> one", "curl -s \\", "  x", "#> a…b", "", "true",
    ])
    assert [s.command for s in steps] == ["echo one", "curl -s \\\n  x", "true"]
    assert [s.expected for s in steps] == [["one"], ["a…b"], []]
    assert line_pattern("a…b").fullmatch("a {json} b")
    assert not line_pattern("a…b").fullmatch("a b c")


def test_quick_start_prints_what_the_readme_shows(sluice_bin, tmp_path):
    steps = parse_steps(quick_start_block())
    for step in steps:
        assert "cargo run" not in step.command.replace(CARGO_RUN, ""), \
            f"README quick start runs cargo other than `{CARGO_RUN}`: {step.command}"
    assert any(s.expected for s in steps), "README quick start shows no output at all"
    for port in (8080, 9092):
        if not port_free(port):
            pytest.fail(f"port {port} is taken: the quick start uses the default ports", pytrace=False)

    script = ["export SLUICE_QUICKSTART_BIN"]
    for i, step in enumerate(steps):
        # the newline first ends a last line printed without one (curl's JSON)
        script.append(f"printf '\\n{MARK} {i}\\n'")
        script.append(step.command.replace(CARGO_RUN, '"$SLUICE_QUICKSTART_BIN"'))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env["SLUICE_QUICKSTART_BIN"] = str(sluice_bin)
    log = tmp_path / "quickstart.stderr"
    work = tmp_path / "work"
    work.mkdir()
    with open(log, "wb") as stderr:
        proc = subprocess.Popen(["bash", "-c", "\n".join(script)], cwd=work, env=env,
                                stdout=subprocess.PIPE, stderr=stderr, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=240)
        finally:
            # the quick start ends with `kill %1`; whatever it left, ends here
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()

    printed: dict[int, list[str]] = {}
    chunks = re.split(rf"\n{MARK} (\d+)\n", out.decode())
    assert chunks[0] == "", f"output before the first command: {chunks[0]!r}"
    for index, text in zip(chunks[1::2], chunks[2::2]):
        printed[int(index)] = text.removesuffix("\n").splitlines()
    problems = []
    for i, step in enumerate(steps):
        got = printed.get(i)
        if got is None:
            problems.append(f"never ran: {step.command}")
            continue
        ok = len(got) == len(step.expected) and all(
            line_pattern(e).fullmatch(g) for e, g in zip(step.expected, got))
        if not ok:
            problems.append(f"$ {step.command}\n  README shows: {step.expected}\n  printed:      {got}")
    assert not problems, "\n".join(problems) + "\n-- stderr --\n" + log.read_text()[-4000:]
