"""Junk thrown at the story loader through `storyd validate`: every outcome is exit 0, or exit 2
with exactly one line on stderr that names the story file; never a traceback.

`catch_exceptions=False` lets any exception that is not a StorydError escape and fail the test.
"""

from __future__ import annotations

import copy
import math
import random
from pathlib import Path

import pytest
import typer.testing
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from storyd.cli.app import app

STORIES = sorted((Path(__file__).parent.parent / "stories").glob("*.yaml"))
MUTATIONS = 240
JUNK_NUMBERS = (10**30, -(10**30), 1e308, -1e308, -1, -1000000, 0, math.nan, math.inf, -math.inf, 2**64, 0.5)
JUNK_VALUES = ("zzz-not-a-value", "", [], {}, ["a", 1], {"x": 1}, True, None, 3, "12x12", "∞")
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture
def validate(monkeypatch, tokenizer):
    """`storyd validate PATH` in-process; the Typer command and the tokenizer are built once, not per call."""
    command = typer.main.get_command(app)
    monkeypatch.setattr(typer.testing, "_get_command", lambda _: command)
    monkeypatch.setattr("storyd.render.tokenizer.load_clip_tokenizer", lambda *a, **k: tokenizer)
    runner = CliRunner()

    def run(path: Path):
        result = runner.invoke(app, ["validate", str(path)], catch_exceptions=False)
        assert result.exit_code in (0, 2), result.output
        if result.exit_code == 2:
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1, result.stderr
            assert lines[0].startswith(f"Error: {path}"), lines[0]
            assert "Traceback" not in result.output
        return result

    return run


def _paths(node, prefix=()):
    """Every (path, value) inside nested dicts and lists, the root excluded."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield prefix + (key,), value
        yield from _paths(value, prefix + (key,))


def _set(data, path, value):
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


def _delete(data, path):
    for key in path[:-1]:
        data = data[key]
    del data[path[-1]]


def mutate(text: str, rng: random.Random) -> bytes:
    """One of ten mutations of a story's text, chosen by `rng`."""
    kind = rng.randrange(10)
    if kind == 0:  # truncated anywhere
        return text[: rng.randrange(len(text))].encode()
    if kind == 1:  # bytes that are not UTF-8, or a NUL
        data = text.encode()
        at = rng.randrange(len(data))
        return data[:at] + rng.choice([b"\xff\xfe", b"\xc3", b"\x00", b"\x1b[31m"]) + data[at:]
    data = yaml.safe_load(text)
    paths = list(_paths(data))
    path, _ = rng.choice(paths)
    if kind == 2:
        _delete(data, path)
    elif kind in (3, 4):  # a junk number where there was a number, or anywhere
        numbers = [p for p, v in paths if isinstance(v, (int, float)) and not isinstance(v, bool)]
        _set(data, rng.choice(numbers) if kind == 3 and numbers else path, rng.choice(JUNK_NUMBERS))
    elif kind in (5, 6):  # a value of another type, or not one of the known values
        _set(data, path, copy.deepcopy(rng.choice(JUNK_VALUES)))
    elif kind == 7:  # deep nesting
        deep: list = []
        for _ in range(rng.choice([10, 70, 300])):
            deep = [deep]
        _set(data, path, deep)
    elif kind == 8:  # a key nobody knows, where keys are
        mappings = [p for p, v in paths if isinstance(v, dict)] or [()]
        target = rng.choice(mappings)
        holder = data
        for key in target:
            holder = holder[key]
        holder[rng.choice(["colour", "sed", "panels", "size", "0"])] = rng.choice(JUNK_NUMBERS + JUNK_VALUES)
    else:  # a whole section replaced by junk
        _set(data, path[:1], copy.deepcopy(rng.choice(JUNK_VALUES + JUNK_NUMBERS)))
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False).encode()


def test_the_example_stories_validate(validate):
    assert len(STORIES) >= 3
    for path in STORIES:
        assert validate(path).exit_code == 0


@settings(max_examples=40, **SETTINGS)
@given(st.text(max_size=200), st.lists(st.integers(0, 200), max_size=3))
def test_mutations_of_the_plain_text_story(validate, tmp_path_factory, junk, cuts):
    text = (STORIES[0].parent / "snow-day.txt").read_text(encoding="utf-8")
    for at in cuts:
        text = text[:at] + junk + text[at:]
    path = tmp_path_factory.mktemp("txt") / "story.txt"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    validate(path)


def test_240_mutations_of_the_example_stories_never_trace_back(validate, tmp_path):
    rng = random.Random(32)
    codes = []
    for n in range(MUTATIONS):
        source = STORIES[n % len(STORIES)]
        path = tmp_path / f"m{n:03d}-{source.name}"
        path.write_bytes(mutate(source.read_text(encoding="utf-8"), rng))
        codes.append(validate(path).exit_code)
    assert codes.count(2) > MUTATIONS // 3  # most mutations are errors, and each was one line


@settings(max_examples=40, **SETTINGS)
@given(st.binary(max_size=300), st.sampled_from(["junk.yaml", "junk.txt"]))
def test_random_bytes(validate, tmp_path_factory, data, name):
    path = tmp_path_factory.mktemp("bytes") / name
    path.write_bytes(data)
    validate(path)


yaml_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
story_keys = st.sampled_from(["title", "seed", "size", "steps", "guidance", "style", "panels", "characters", "layout"])


@settings(max_examples=40, **SETTINGS)
@given(st.dictionaries(story_keys, yaml_values, max_size=6))
def test_random_yaml_stories(validate, tmp_path_factory, data):
    path = tmp_path_factory.mktemp("yaml") / "story.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    validate(path)


JUNK_LENGTHS = ["500mm", "0px", "100000x100000px", "10x10px", "1x1in", "a4", "strip", "grid", ".nan", "9e99mm"]
layout_values = st.one_of(
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(),
    st.sampled_from(JUNK_LENGTHS + ["1" + "0" * 400 + "mm", "1" + "0" * 400 + "x1px"]),
)
layout_keys = st.sampled_from(["margin", "gutter", "border", "page", "dpi", "rows", "columns", "template", "seed"])


@settings(max_examples=40, **SETTINGS)
@given(st.dictionaries(layout_keys, layout_values, min_size=1, max_size=4), st.integers(-(10**20), 10**20))
def test_huge_negative_and_nan_numbers_in_a_story(validate, tmp_path_factory, layout, seed):
    story = yaml.safe_load(STORIES[0].read_text(encoding="utf-8"))
    story["layout"] = layout
    story["seed"] = seed
    path = tmp_path_factory.mktemp("numbers") / "story.yaml"
    path.write_text(yaml.safe_dump(story, allow_unicode=True), encoding="utf-8")
    validate(path)


@settings(max_examples=20, **SETTINGS)
@given(st.sampled_from(["utf-16", "utf-32", "latin-1", "cp1252", "shift_jis", "utf-8-sig"]), st.integers(0, 2))
def test_odd_encodings(validate, tmp_path_factory, encoding, which):
    path = tmp_path_factory.mktemp("enc") / "story.yaml"
    text = STORIES[which % len(STORIES)].read_text(encoding="utf-8").replace("Mia", "Mía").replace("Maya", "真矢")
    path.write_bytes(text.encode(encoding, errors="replace"))
    validate(path)
