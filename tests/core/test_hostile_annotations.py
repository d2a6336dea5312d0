"""Hostile annotation files: every invalid .pts file or WFLW list raises AnnotationError, cheaply.

The fixed cases cover files seen in the wild (binary junk, NUL bytes, huge
declared counts, encodings) and files built to exhaust memory or time. The
property-based tests feed parse_pts_text, read_pts and read_wflw_list random
bytes and near-valid text, and check every result against an independent
oracle: a finite (K, 2) float32 array equal to the input, or AnnotationError.
"""

from __future__ import annotations

import os
import pathlib
import stat
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from explorer.core.data import (
    FLOAT32_MAX,
    MAX_LIST_BYTES,
    MAX_LIST_LINES,
    MAX_POINTS,
    MAX_PTS_BYTES,
    AnnotationError,
    DatasetError,
    parse_pts_text,
    read_pts,
    read_wflw_list,
    scan_folder,
)

# Hypothesis runs each example in microseconds; the deadline only catches a
# hang, with room for a machine that is busy with other work.
FUZZ = settings(
    max_examples=300,
    deadline=2000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

SIXTY_EIGHT = np.arange(136, dtype=np.float64).reshape(68, 2) * 1.5 + 10


def header_file(points: np.ndarray, newline: str = "\n", separator: str = " ", count: str | None = None) -> str:
    count = str(len(points)) if count is None else count
    lines = ["version: 1", f"n_points: {count}", "{", *(f"{x}{separator}{y}" for x, y in points), "}"]
    return newline.join(lines) + newline


def assert_valid_points(points: np.ndarray) -> None:
    assert isinstance(points, np.ndarray)
    assert points.dtype == np.float32
    assert points.ndim == 2
    assert points.shape[1] == 2
    assert 1 <= points.shape[0] <= MAX_POINTS
    assert np.isfinite(points).all()


class ReadSpy:
    """Counts the bytes that code reads through ``Path.open``, per file."""

    def __init__(self) -> None:
        self.bytes_read: dict[Path, int] = {}
        self.opened: list[Path] = []

    def wrap(self, real_open):
        spy = self

        def open_and_count(path, *args, **kwargs):
            handle = real_open(path, *args, **kwargs)
            spy.opened.append(Path(path))
            spy.bytes_read.setdefault(Path(path), 0)
            return CountingHandle(handle, spy, Path(path))

        return open_and_count


class CountingHandle:
    def __init__(self, handle, spy: ReadSpy, path: Path) -> None:
        self._handle, self._spy, self._path = handle, spy, path

    def read(self, *args):
        data = self._handle.read(*args)
        self._spy.bytes_read[self._path] += len(data)
        return data

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._handle.close()

    def __getattr__(self, name):
        return getattr(self._handle, name)


@pytest.fixture
def read_spy(monkeypatch) -> ReadSpy:
    spy = ReadSpy()
    monkeypatch.setattr(pathlib.Path, "open", spy.wrap(pathlib.Path.open))
    return spy


# ------------------------------------------------------------ fixed .pts cases

HOSTILE_PTS = {
    # name: (file content, expected words in the message, expected line or None)
    "zero-bytes": (b"", "contains no points", None),
    "million-blank-lines": (b"\n" * MAX_PTS_BYTES, "contains no points", None),
    "million-crlf-lines": (b"\r\n" * (MAX_PTS_BYTES // 2), "contains no points", None),
    "too-many-point-lines": (b"1 2\n" * (MAX_PTS_BYTES // 4), f"more than {MAX_POINTS} points", MAX_POINTS + 1),
    "header-repeated": (b"version: 1\n" * (MAX_PTS_BYTES // 11), "must be followed by '{'", None),
    "nan": (b"version: 1\nn_points: 2\n{\n1 2\nnan 4\n}\n", "must be finite", 5),
    "negative-nan": (b"1 2\n-NaN 4\n", "must be finite", 2),
    "inf": (b"1 2\n3 inf\n", "must be finite", 2),
    "infinity-word": (b"1 2\n-Infinity 4\n", "must be finite", 2),
    "float64-overflow": (b"1 2\n1e309 4\n", "must be finite", 2),
    "float32-overflow": (b"1 2\n3.5e38 4\n", "float32", 2),
    "negative-float32-overflow": (b"1 2\n4 -1e39\n", "float32", 2),
    "negative-count": (b"version: 1\nn_points: -5\n{\n}\n", "n_points is negative (-5)", 2),
    "huge-count": (b"version: 1\nn_points: 1000000000000\n{\n1 2\n}\n", "above the limit", 2),
    "count-one-over-limit": (f"n_points: {MAX_POINTS + 1}\n{{\n1 2\n}}\n".encode(), "above the limit", 1),
    "five-thousand-digit-count": (b"n_points: " + b"9" * 5000 + b"\n{\n1 2\n}\n", "must be an integer", 1),
    "float-count": (b"n_points: 2.0\n{\n1 2\n3 4\n}\n", "must be an integer", 1),
    "count-mismatch": (b"n_points: 3\n{\n1 2\n3 4\n}\n", "n_points is 3 but the file has 2", 1),
    "count-twice": (b"n_points: 1\nn_points: 1\n{\n1 2\n}\n", "n_points is given twice", 2),
    "binary-junk": (bytes(np.random.default_rng(7).integers(128, 256, 4096, dtype=np.uint8)), "invalid UTF-8", None),
    "png-bytes": (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "not a text file", None),
    "nul-bytes": (b"1 2\n3\x004\n", "contains NUL bytes", None),
    "utf16-file": ("1 2\n3 4\n".encode("utf-16"), "not a text file", None),
    "latin1-accent": ("1 2\n3 4 \xe9\n".encode("latin-1"), "invalid UTF-8", None),
    "encoded-surrogate": (b"1 2\n\xed\xa0\x80 4\n", "invalid UTF-8", None),
    "long-line-of-values": (b"1 " * (MAX_PTS_BYTES // 2 - 1), "got more than 2", 1),
    "long-single-token": (b"7" * (MAX_PTS_BYTES - 1), "expected 2 values", 1),
    "long-header-key": (b"k" * (MAX_PTS_BYTES - 10) + b": 1\n", "unknown header key", 1),
    "emoji-values": ("1 2\n\U0001f600 \U0001f600\n".encode(), "must be numbers", 2),
    "right-to-left-mark": ("1 2\n\u200f3 4\n".encode(), "must be numbers", 2),
    "snowman-header": ("\u2603: 1\n{\n1 2\n}\n".encode(), "unknown header key", 1),
    "hex-float": (b"1 2\n0x10 4\n", "must be numbers", 2),
    "comma-decimal": (b"1 2\n3,5 4\n", "must be numbers", 2),
    "two-files-pasted": (header_file(SIXTY_EIGHT[:2]).encode() * 2, "after the closing", 7),
    "brace-without-header": (b"1 2\n{\n3 4\n}\n", "unexpected '{'", 2),
}


@pytest.mark.parametrize("case", list(HOSTILE_PTS))
def test_read_pts_rejects_hostile(tmp_path, case):
    content, words, line = HOSTILE_PTS[case]
    path = tmp_path / f"{case}.pts"
    path.write_bytes(content)
    assert len(content) <= MAX_PTS_BYTES, "the case must pass the size check to test the parser"

    started = time.perf_counter()
    with pytest.raises(AnnotationError) as caught:
        read_pts(path)
    elapsed = time.perf_counter() - started

    message = str(caught.value)
    assert message.startswith(str(path)), message[:200]
    assert words in message, message[:200]
    assert caught.value.path == path
    assert caught.value.line == line
    # Messages quote a bounded excerpt of the file, never a whole line.
    assert len(message) < len(str(path)) + 400
    # The size cap bounds the parser's work (under 0.2 s per case on a 2-core
    # CPU); the limit leaves room for a busy machine.
    assert elapsed < 10


def test_read_pts_rejects_million_point_lines(tmp_path, read_spy):
    path = tmp_path / "million.pts"
    path.write_bytes(b"1 2\n" * 1_000_000)

    with pytest.raises(AnnotationError, match=r"million.pts: file is 4000000 bytes, above the 1000000-byte limit"):
        read_pts(path)
    assert read_spy.bytes_read.get(path, 0) == 0


def test_read_pts_rejects_sparse_file_unread(tmp_path, read_spy):
    path = tmp_path / "sparse.pts"
    with path.open("wb") as stream:
        stream.truncate(200_000_000)
    read_spy.opened.clear()

    started = time.perf_counter()
    with pytest.raises(AnnotationError, match=r"sparse.pts: file is 200000000 bytes, above the 1000000-byte limit"):
        read_pts(path)

    assert time.perf_counter() - started < 1.0
    assert path not in read_spy.opened


def test_read_pts_caps_file_grown_after_stat(tmp_path, read_spy, monkeypatch):
    path = tmp_path / "growing.pts"
    with path.open("wb") as stream:
        stream.truncate(200_000_000)
    real_stat = pathlib.Path.stat

    # Report a small size, as if the file grew between stat() and read().
    def stat_small(self, *args, **kwargs):
        result = real_stat(self, *args, **kwargs)
        if self == path:
            fields = list(result)
            fields[stat.ST_SIZE] = 100
            return os.stat_result(fields)
        return result

    monkeypatch.setattr(pathlib.Path, "stat", stat_small)
    with pytest.raises(AnnotationError, match=r"growing.pts: file is larger than the 1000000-byte limit"):
        read_pts(path)
    assert read_spy.bytes_read[path] == MAX_PTS_BYTES + 1


def test_read_pts_unreadable_file_named(tmp_path, monkeypatch):
    path = tmp_path / "locked.pts"
    path.write_text(header_file(SIXTY_EIGHT))
    real_open = pathlib.Path.open

    def deny(self, *args, **kwargs):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "open", deny)
    with pytest.raises(AnnotationError, match=r"locked.pts: cannot read the file \(Permission denied\)"):
        read_pts(path)


def test_read_pts_overlong_name_not_found(tmp_path):
    path = tmp_path / ("n" * 5000 + ".pts")

    with pytest.raises(AnnotationError, match="annotation file not found"):
        read_pts(path)


def test_scan_lists_hostile_files(tmp_path):
    # One valid face and three hostile annotations next to real images: the
    # scan reports each bad file instead of stopping at the first exception.
    valid = header_file(SIXTY_EIGHT).encode()
    contents = {"good": valid, "nan": valid.replace(b"10.0 11.5", b"nan 11.5"), "junk": b"\xff\xfe\x00junk", "empty": b""}
    for name, content in contents.items():
        (tmp_path / f"{name}.pts").write_bytes(content)
        (tmp_path / f"{name}.ppm").write_bytes(b"P6\n400 400\n255\n" + bytes(400 * 400 * 3))

    with pytest.raises(DatasetError) as caught:
        scan_folder(tmp_path)

    problems = {problem.path.name: problem.reason for problem in caught.value.problems}
    assert set(problems) == {"nan.pts", "junk.pts", "empty.pts"}
    assert "must be finite" in problems["nan.pts"]
    assert "not a text file" in problems["junk.pts"]
    assert "no points" in problems["empty.pts"]


# ------------------------------------------------------------ valid variations

VALID_LAYOUTS = {
    "crlf": header_file(SIXTY_EIGHT, newline="\r\n"),
    "cr-only": header_file(SIXTY_EIGHT, newline="\r"),
    "tabs": header_file(SIXTY_EIGHT, separator="\t"),
    "tabs-and-spaces": header_file(SIXTY_EIGHT, separator=" \t  "),
    "tab-after-colon": header_file(SIXTY_EIGHT).replace("n_points: ", "n_points:\t"),
    "no-space-after-colon": header_file(SIXTY_EIGHT).replace("n_points: ", "n_points:"),
    "upper-case-keys": header_file(SIXTY_EIGHT).replace("n_points", "N_POINTS").replace("version", "Version"),
    "no-final-newline": header_file(SIXTY_EIGHT).rstrip("\n"),
    "blank-lines": header_file(SIXTY_EIGHT, newline="\n\n"),
    "indented": "\n".join("  " + line + "  " for line in header_file(SIXTY_EIGHT).splitlines()),
    "utf8-bom": "\ufeff" + header_file(SIXTY_EIGHT),
    "mixed-newlines": header_file(SIXTY_EIGHT).replace("\n", "\r\n", 40),
    "no-header": "\n".join(f"{x} {y}" for x, y in SIXTY_EIGHT),
    "exponent-notation": "\n".join(f"{x:e}\t{y:E}" for x, y in SIXTY_EIGHT),
    "plus-signs": "\n".join(f"+{x} +{y}" for x, y in SIXTY_EIGHT),
}


@pytest.mark.parametrize("layout", list(VALID_LAYOUTS))
def test_read_pts_accepts_layout(tmp_path, layout):
    path = tmp_path / f"{layout}.pts"
    path.write_bytes(VALID_LAYOUTS[layout].encode("utf-8"))

    points = read_pts(path, expected_count=68)

    assert_valid_points(points)
    np.testing.assert_array_equal(points, SIXTY_EIGHT.astype(np.float32))


def test_parse_pts_accepts_float32_max():
    points = parse_pts_text(f"{FLOAT32_MAX!r} -{FLOAT32_MAX!r}\n")

    assert_valid_points(points)
    assert points[0, 0] == np.finfo(np.float32).max


# ------------------------------------------------------------ property tests

# Number tokens with their meaning for the oracle: float() of the token, or
# None where float() rejects it.
JUNK_TOKENS = ["nan", "-NaN", "inf", "-Infinity", "1e309", "-1e309", "3.5e38", "-1e39", "1e-320", "0x10",
               "1,5", "1e", "--1", "abc", "\u0661", "1_000", "\u2603", "{", "}", "n_points:"]


def float_or_none(token: str) -> float | None:
    try:
        return float(token)
    except ValueError:
        return None


def token_is_valid(token: str) -> bool:
    value = float_or_none(token)
    return value is not None and np.isfinite(value) and abs(value) <= FLOAT32_MAX


number_tokens = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-10**6, 10**6).map(str),
    st.sampled_from(JUNK_TOKENS),
)


@st.composite
def near_valid_pts(draw):
    """Return (text, expected points or None): a .pts file and the oracle's result."""
    count = draw(st.integers(0, 40))
    rows = [(draw(number_tokens), draw(number_tokens)) for _ in range(count)]
    separator = draw(st.sampled_from([" ", "\t", "  ", " \t "]))
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    point_lines = [f"{x}{separator}{y}" for x, y in rows]

    header_count = draw(st.one_of(st.just(str(count)), st.integers(-5, 20_000).map(str), st.sampled_from(JUNK_TOKENS)))
    with_header = draw(st.booleans())
    if with_header:
        lines = ["version: 1", f"n_points: {header_count}", "{", *point_lines, "}"]
    else:
        lines = point_lines
    text = newline.join(lines) + draw(st.sampled_from(["", newline]))

    valid = count >= 1 and all(token_is_valid(x) and token_is_valid(y) for x, y in rows)
    if with_header:
        try:
            valid = valid and int(header_count) == count
        except ValueError:
            valid = False
    expected = np.array([[float(x), float(y)] for x, y in rows], dtype=np.float32) if valid else None
    return text, expected


@FUZZ
@given(st.binary(max_size=3000))
def test_parse_pts_any_bytes(content):
    try:
        points = parse_pts_text(content, source="fuzz.pts")
    except AnnotationError as error:
        assert str(error).startswith("fuzz.pts")
        return
    assert_valid_points(points)


@FUZZ
@given(st.text(max_size=3000))
def test_parse_pts_any_text(text):
    try:
        points = parse_pts_text(text, source="fuzz.pts")
    except AnnotationError as error:
        assert str(error).startswith("fuzz.pts")
        return
    assert_valid_points(points)


@FUZZ
@given(near_valid_pts())
def test_parse_pts_matches_oracle(case):
    text, expected = case

    if expected is None:
        with pytest.raises(AnnotationError, match=r"^near.pts"):
            parse_pts_text(text, source="near.pts")
        return
    points = parse_pts_text(text, source="near.pts")
    assert_valid_points(points)
    np.testing.assert_array_equal(points, expected)


@FUZZ
@given(content=st.one_of(st.binary(max_size=2000), near_valid_pts().map(lambda case: case[0].encode("utf-8"))))
def test_read_pts_any_file(tmp_path, content):
    path = tmp_path / "fuzz.pts"
    path.write_bytes(content)
    try:
        points = read_pts(path)
    except AnnotationError as error:
        assert error.path == path
        assert str(error).startswith(str(path))
        return
    assert_valid_points(points)
    np.testing.assert_array_equal(points, parse_pts_text(content))


# ------------------------------------------------------------ WFLW lists

WFLW_NUMBERS = 196 + 4 + 6


def wflw_line(points: np.ndarray, image: str, flags=(0, 0, 0, 0, 0, 0), box=(1, 2, 90, 95)) -> str:
    values = [repr(float(value)) for value in points.reshape(-1)] + [str(value) for value in (*box, *flags)]
    return " ".join(values) + " " + image


@st.composite
def near_valid_wflw(draw):
    """Return (text, expected point arrays or None) for a WFLW list of a few lines."""
    line_count = draw(st.integers(1, 4))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    lines, expected = [], []
    valid = True
    for _ in range(line_count):
        seed = draw(st.integers(0, 2**32 - 1))
        points = np.random.default_rng(seed).uniform(-1e4, 1e4, size=(98, 2))
        tokens = [repr(float(value)) for value in points.reshape(-1)] + ["1", "2", "90", "95"]
        tokens += [str(draw(st.sampled_from([0, 1]))) for _ in range(6)]
        image = draw(st.from_regex(r"[A-Za-z0-9_\-]{1,10}(/[A-Za-z0-9_\-]{1,10}){0,2}\.jpg", fullmatch=True))

        mutation = draw(st.sampled_from(["none", "none", "token", "flag", "image", "drop", "extra"]))
        if mutation == "token":
            # A point coordinate must fit in float32; a box value must only be finite.
            index = draw(st.integers(0, 199))
            tokens[index] = draw(st.sampled_from(JUNK_TOKENS))
            value = float_or_none(tokens[index])
            if index < 196:
                line_valid = token_is_valid(tokens[index])
                if line_valid:
                    points.reshape(-1)[index] = value
            else:
                line_valid = value is not None and bool(np.isfinite(value))
        elif mutation == "flag":
            tokens[200 + draw(st.integers(0, 5))] = draw(st.sampled_from(["2", "-1", "0.5", "nan", "yes"]))
            line_valid = False
        elif mutation == "image":
            image = draw(st.sampled_from(["../outside.jpg", "/etc/passwd", ".", "a/../../b.jpg"]))
            line_valid = False
        elif mutation == "drop":
            del tokens[draw(st.integers(0, len(tokens) - 1))]
            line_valid = False
        elif mutation == "extra":
            # An extra number before the flags shifts a box value or the 2 into them.
            tokens.insert(draw(st.integers(0, WFLW_NUMBERS - 1)), "2")
            line_valid = False
        else:
            line_valid = True

        if mutation == "drop" and draw(st.booleans()):
            image = ""
        lines.append(" ".join(tokens) + (" " + image if image else ""))
        expected.append(points.astype(np.float32))
        valid = valid and line_valid

    text = newline.join(lines) + newline
    return text, expected if valid else None


def sorted_arrays(arrays) -> list[bytes]:
    return sorted(np.ascontiguousarray(array).tobytes() for array in arrays)


@FUZZ
@given(content=st.binary(max_size=3000))
def test_wflw_list_any_bytes(tmp_path, content):
    path = tmp_path / "list.txt"
    path.write_bytes(content)
    try:
        records = read_wflw_list(path, tmp_path, check_images=False)
    except AnnotationError as error:
        assert error.path == path
        return
    for record in records:
        assert_valid_points(record.points)


@settings(FUZZ, max_examples=60)
@given(case=near_valid_wflw())
def test_wflw_list_matches_oracle(tmp_path, case):
    text, expected = case
    path = tmp_path / "list.txt"
    path.write_text(text, newline="")

    if expected is None:
        with pytest.raises(AnnotationError) as caught:
            read_wflw_list(path, tmp_path, check_images=False)
        assert caught.value.path == path
        assert caught.value.line is not None
        return
    records = read_wflw_list(path, tmp_path, check_images=False)
    assert len(records) == len(expected)
    for record in records:
        assert record.points.shape == (98, 2)
        assert record.points.dtype == np.float32
        assert np.isfinite(record.points).all()
        assert set(record.attributes.values()) <= {0, 1}
    assert sorted_arrays(record.points for record in records) == sorted_arrays(expected)


WFLW_FACE = np.random.default_rng(3).uniform(10, 90, size=(98, 2)).round(3)


def with_first_value(line: str, token: str) -> str:
    return token + " " + line.split(" ", 1)[1]


HOSTILE_WFLW = {
    "parent-folder": (wflw_line(WFLW_FACE, "../../etc/secret.jpg"), "must not contain '..'"),
    "absolute-path": (wflw_line(WFLW_FACE, "/etc/passwd"), "must be relative"),
    "dot-path": (wflw_line(WFLW_FACE, "."), "has no file name"),
    "nan-point": (with_first_value(wflw_line(WFLW_FACE, "a.jpg"), "nan"), "finite"),
    "float64-overflow": (with_first_value(wflw_line(WFLW_FACE, "a.jpg"), "1e309"), "finite"),
    "float32-overflow": (with_first_value(wflw_line(WFLW_FACE, "a.jpg"), "1e39"), "float32"),
    "flag-two": (wflw_line(WFLW_FACE, "a.jpg", flags=(0, 0, 2, 0, 0, 0)), "flags must be 0 or 1"),
    "short-line": ("1 2 3 a.jpg", f"expected {WFLW_NUMBERS} numbers"),
    "latin1-path": (wflw_line(WFLW_FACE, "caf\xe9.jpg"), "invalid UTF-8"),
}


@pytest.mark.parametrize("case", list(HOSTILE_WFLW))
def test_wflw_list_rejects_hostile(tmp_path, case):
    line, words = HOSTILE_WFLW[case]
    path = tmp_path / "list.txt"
    encoding = "latin-1" if case == "latin1-path" else "utf-8"
    path.write_bytes((wflw_line(WFLW_FACE, "fine.jpg") + "\n" + line + "\n").encode(encoding))

    with pytest.raises(AnnotationError) as caught:
        read_wflw_list(path, tmp_path, check_images=False)

    assert str(caught.value).startswith(f"{path}, line 2: ")
    assert words in str(caught.value)


def test_wflw_list_rejects_binary_and_nul(tmp_path):
    path = tmp_path / "list.txt"
    path.write_bytes(wflw_line(WFLW_FACE, "a.jpg").encode() + b"\x00\n")

    with pytest.raises(AnnotationError, match="list.txt: not a text file .*NUL"):
        read_wflw_list(path, tmp_path, check_images=False)


def test_wflw_list_accepts_crlf_and_bom(tmp_path):
    path = tmp_path / "list.txt"
    text = "\ufeff" + wflw_line(WFLW_FACE, "b c/x.jpg") + "\r\n\r\n" + wflw_line(WFLW_FACE, "y.jpg") + "\r\n"
    path.write_bytes(text.encode("utf-8"))

    records = read_wflw_list(path, tmp_path, check_images=False)

    assert [record.name for record in records] == ["b c/x#1", "y#1"]
    np.testing.assert_array_equal(records[0].points, WFLW_FACE.astype(np.float32))


def test_wflw_list_sparse_file_unread(tmp_path, read_spy):
    path = tmp_path / "list.txt"
    with path.open("wb") as stream:
        stream.truncate(MAX_LIST_BYTES + 1)
    read_spy.opened.clear()

    started = time.perf_counter()
    with pytest.raises(AnnotationError, match=rf"list.txt: file is {MAX_LIST_BYTES + 1} bytes, above the"):
        read_wflw_list(path, tmp_path)

    assert time.perf_counter() - started < 1.0
    assert path not in read_spy.opened


def test_wflw_list_line_cap(tmp_path):
    path = tmp_path / "list.txt"
    path.write_bytes(b"\n" * (MAX_LIST_LINES + 5))

    with pytest.raises(AnnotationError, match=rf"list.txt, line {MAX_LIST_LINES + 1}: more than"):
        read_wflw_list(path, tmp_path, check_images=False)


def test_wflw_list_many_tokens_memory(tmp_path):
    # A valid line followed by 1.3 million more numbers, 4 MB in all.
    path = tmp_path / "list.txt"
    path.write_bytes(b"12 " * 200 + b"0 " * 6 + b"12 " * 1_300_000 + b"a.jpg\n")

    tracemalloc.start()
    try:
        with pytest.raises(DatasetError) as caught:
            read_wflw_list(path, tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # The surplus numbers become the image path, which no file can match
    # (the name is longer than file systems allow).
    assert len(caught.value.problems) == 1
    # The reader keeps about nine copies of the line (35 MB on CPython 3.11),
    # while splitting it into tokens peaks at over 90 MB.
    assert peak < 60_000_000, f"peak {peak / 1e6:.0f} MB"


def test_wflw_list_unreadable_named(tmp_path, monkeypatch):
    path = tmp_path / "list.txt"
    path.write_text(wflw_line(WFLW_FACE, "a.jpg") + "\n")
    real_open = pathlib.Path.open

    def fail(self, *args, **kwargs):
        if self == path:
            raise OSError(5, "Input/output error", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "open", fail)
    with pytest.raises(AnnotationError, match=r"list.txt: cannot read the file \(Input/output error\)"):
        read_wflw_list(path, tmp_path)
