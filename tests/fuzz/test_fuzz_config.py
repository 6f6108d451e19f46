"""Config loading fuzzed (issue 11): any TOML bytes, any VMF_* environment, any override gives
a Settings or a ConfigError that names where the problem is; never another exception."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.loader import ConfigError, load_settings
from config.settings import Settings

TMP = Path(tempfile.mkdtemp(prefix="fuzz-config-"))
SECTIONS = ["target", "session", "stimulation", "simulator", "processing", "protocol", "device"]
FIELDS = ["low_pct", "high_pct", "channel", "patient", "station", "max_amplitude_ma", "rate_hz",
          "hold_s", "work_s", "block_ms", "x", ""]  # fmt: skip
VALUES = st.one_of(
    st.sampled_from(
        ["35", "-1", "1e308", "nan", "inf", "true", "[1, 2]", "{a = 1}", '"VM"', "'", "[[", "",
         "0x10", "1979-05-27", "\x00", "é", "60.0000001", "[" * 200, '"' + "A" * 5000 + '"']
    ),
    st.text(max_size=40),
)  # fmt: skip
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def loads(path: Path | None = None, **kwargs: object) -> None:
    try:
        result = load_settings(path, **kwargs)  # type: ignore[arg-type]
    except ConfigError as exc:
        assert str(exc).strip(), "a ConfigError must say what is wrong"
        assert "Traceback" not in str(exc)
    else:
        assert isinstance(result, Settings)


@FUZZ
@given(st.binary(max_size=2000))
def test_any_bytes_as_the_toml_file(data: bytes) -> None:
    path = TMP / "any.toml"
    path.write_bytes(data)
    loads(path, environ={})


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.sampled_from([*SECTIONS, "", "Target", "target.x"]), st.sampled_from(FIELDS), VALUES
        ),
        max_size=6,
    )
)
def test_toml_shaped_text(entries: list[tuple[str, str, str]]) -> None:
    text = "".join(f"[{s}]\n{f} = {v}\n" for s, f, v in entries)
    path = TMP / "shaped.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    loads(path, environ={})


ENV_KEYS = st.one_of(
    st.builds(
        lambda s, f, extra: f"VMF_{s.upper()}__{f.upper()}{extra}",
        st.sampled_from([*SECTIONS, "", "X"]),
        st.sampled_from(FIELDS),
        st.sampled_from(["", "__", "__X", "__LOW_PCT__Y", "___"]),
    ),
    st.text(max_size=20).map(lambda t: "VMF_" + t),
)


@FUZZ
@given(st.dictionaries(ENV_KEYS, VALUES, max_size=6))
def test_any_environment_overrides(environ: dict[str, str]) -> None:
    loads(environ=environ)


@FUZZ
@given(
    st.dictionaries(
        st.builds(
            lambda s, f: f"{s}.{f}".strip("."),
            st.sampled_from([*SECTIONS, ""]),
            st.sampled_from(FIELDS),
        ),
        st.one_of(
            st.none(),
            st.integers(),
            st.floats(),
            st.text(max_size=10),
            st.lists(st.integers(), max_size=3),
        ),
        max_size=4,
    )
)
def test_any_programmatic_overrides(overrides: dict[str, object]) -> None:
    loads(environ={}, overrides=overrides)


def test_known_crashers_are_config_errors() -> None:
    """Found by the fuzzing above; each raised something other than ConfigError before."""
    path = TMP / "latin1.toml"
    path.write_bytes(b"[session]\npatient = '\xe9'\n")  # not UTF-8
    loads(path, environ={})
    loads(environ={"VMF_TARGET__LOW_PCT": "35", "VMF_TARGET__LOW_PCT__X": "1"})
