"""The atheris harnesses' shared command line (tests/fuzz/atheris_main.py), run with a stand-in
for atheris whose `Fuzz` runs the target once on each corpus file: the suite's venv has no
atheris (the `fuzz` extra), and `make fuzz` is the only other place the harnesses run."""

from __future__ import annotations

import contextlib
import logging
import runpy
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fuzz import file_targets, targets
from tests.fuzz.atheris_main import fuzz_main

HARNESSES = [("tests.fuzz.atheris_parsers", name) for name in targets.TARGETS] + [
    ("tests.fuzz.atheris_files", name) for name in file_targets.TARGETS
]


class FakeAtheris(types.ModuleType):
    def __init__(self) -> None:
        super().__init__("atheris")
        self.argv: list[str] = []
        self.target: Callable[[bytes], None] | None = None

    def instrument_imports(self) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()

    def instrument_all(self) -> None:
        pass

    def Setup(self, argv: list[str], target: Callable[[bytes], None]) -> None:
        self.argv, self.target = list(argv), target

    def Fuzz(self) -> None:
        assert self.target is not None
        for seed in sorted(Path(self.argv[-1]).iterdir()):
            self.target(seed.read_bytes())


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeAtheris]:
    stand_in = FakeAtheris()
    monkeypatch.setitem(sys.modules, "atheris", stand_in)
    monkeypatch.chdir(tmp_path)
    yield stand_in
    logging.disable(logging.NOTSET)  # the harness silences logging for the whole process


@pytest.mark.parametrize(("harness", "name"), HARNESSES)
def test_without_a_corpus_each_seed_goes_through_the_target(
    harness: str,
    name: str,
    fake: FakeAtheris,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cases = targets.CASES if harness.endswith("parsers") else file_targets.CASES
    before = cases[name]
    monkeypatch.setattr(sys, "argv", [harness, name, "-atheris_runs=10"])
    runpy.run_module(harness, run_name="__main__")
    corpus = Path(".fuzz-corpus") / name
    seeds = sorted(corpus.iterdir())
    assert seeds and fake.argv == [harness, "-atheris_runs=10", str(corpus)]
    assert cases[name] - before == len(seeds)
    assert f"fuzz cases: {name} {cases[name]}" in capsys.readouterr().err


def test_a_given_corpus_is_used_and_an_unknown_target_named(
    fake: FakeAtheris, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "one").write_bytes(b"{}")
    monkeypatch.setattr(sys, "argv", ["h", "stream", str(mine)])
    fuzz_main("tests.fuzz.atheris_parsers", targets.TARGETS, targets.CASES, lambda _: [b"x"])
    assert fake.argv == ["h", str(mine)] and not Path(".fuzz-corpus").exists()
    monkeypatch.setattr(sys, "argv", ["h", "nonesuch"])
    with pytest.raises(SystemExit, match=r"python -m tests.fuzz.atheris_parsers \{command,"):
        fuzz_main("tests.fuzz.atheris_parsers", targets.TARGETS, targets.CASES, lambda _: [])


def test_a_finding_stops_the_run_and_the_count_is_still_said(
    fake: FakeAtheris, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Negative control: a target that fails on a seed is not swallowed by the helper."""
    ran = {"boom": 0}

    def boom(data: bytes) -> None:
        ran["boom"] += 1
        raise ValueError(data)

    monkeypatch.setattr(sys, "argv", ["h", "boom"])
    with pytest.raises(ValueError, match="first"):
        fuzz_main("h", {"boom": boom}, ran, lambda _: [b"first", b"second"])
    assert "fuzz cases: boom 1" in capsys.readouterr().err
