"""Fuzzed interaction files: each is read correctly or refused with a DataError naming it.

Hypothesis writes files with random delimiters, headers, BOMs, CRLF line ends, empty lines,
Unicode and numeric ids (negative and huge), then injects one defect (a missing field, NaN or
inf, a wrong delimiter, a duplicate header, a truncated last line). A clean file must read back
exactly; a defective one must raise `DataError` with the file's name (and the line, where the
defect sits on one). Nothing else may escape, and nothing may hang.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ncf.data import read_interactions
from ncf.errors import DataError

CASES = {"tried": 0, "read": 0, "refused": 0}
SEPS = [",", "\t", ";", "|", "::"]

int_ids = st.integers(-(2**62), 2**62)
str_ids = st.text(
    alphabet=st.characters(categories=["L", "N"], exclude_characters="\x00"),
    min_size=1,
    max_size=8,
).map(lambda s: "u" + s)
numbers = st.one_of(st.integers(0, 2**40).map(str), st.floats(-1e9, 1e9, allow_nan=False).map(repr))
DEFECTS = ["none", "nan", "inf", "missing_field", "wrong_sep", "dup_header", "truncated", "text"]


@st.composite
def interaction_files(draw):
    n = draw(st.integers(1, 12))
    ids = draw(st.sampled_from([int_ids, str_ids]))
    rows = [[str(draw(ids)), str(draw(ids)), draw(numbers), draw(numbers)] for _ in range(n)]
    return {
        "rows": rows,
        "sep": draw(st.sampled_from(SEPS)),
        "header": draw(st.booleans()),
        "bom": draw(st.booleans()),
        "crlf": draw(st.booleans()),
        "blank_after": draw(st.sets(st.integers(0, n - 1), max_size=3)),
        "defect": draw(st.sampled_from(DEFECTS)),
        "defect_row": draw(st.integers(0, n - 1)),
    }


def render(spec: dict) -> tuple[bytes, int | None]:
    """The file's bytes and the 1-based line of the injected defect (None if not on a line)."""
    sep, rows = spec["sep"], [list(r) for r in spec["rows"]]
    defect, target = spec["defect"], spec["defect_row"]
    header = ["user", "item", "rating", "timestamp"]
    if defect == "nan":
        rows[target][2] = "nan"
    elif defect == "inf":
        rows[target][3] = "inf"
    elif defect == "text":
        rows[target][3] = "yesterday"
    elif defect == "missing_field":
        rows[target] = rows[target][:1]
    elif defect == "dup_header":
        header[3] = "user"
    lines, defect_line = [], None
    if spec["header"]:
        lines.append(sep.join(header))
    for i, row in enumerate(rows):
        lines.append(sep.join(row))
        if i == target:
            defect_line = len(lines)
        if i in spec["blank_after"]:
            lines.append("")
    if defect == "truncated":
        last = max(i for i, line in enumerate(lines) if line)
        lines[last] = lines[last].split(sep)[0]
        defect_line = last + 1
    newline = "\r\n" if spec["crlf"] else "\n"
    text = newline.join(lines) + newline
    data = text.encode("utf-8")
    if spec["bom"]:
        data = b"\xef\xbb\xbf" + data
    return data, defect_line


@settings(max_examples=300, deadline=5000)
@given(interaction_files())
def test_fuzzed_files_read_correctly_or_fail_clearly(spec):
    CASES["tried"] += 1
    data, defect_line = render(spec)
    defect = spec["defect"]
    sep = "," if (defect == "wrong_sep" and spec["sep"] != ",") else spec["sep"]
    if defect == "wrong_sep" and spec["sep"] == ",":
        sep = ";"
    if defect == "dup_header" and not spec["header"]:
        defect = "none"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.txt"
        path.write_bytes(data)
        try:
            result = read_interactions(path, sep=sep, header=spec["header"])
        except DataError as exc:
            CASES["refused"] += 1
            message = str(exc)
            assert "fuzz.txt" in message
            assert defect != "none", f"a clean file was refused: {message}"
            if defect in ("nan", "inf", "text", "missing_field", "truncated"):
                assert f"line {defect_line}" in message, message
            return
    CASES["read"] += 1
    assert defect == "none", f"defect {defect!r} was read silently"
    rows = spec["rows"]
    expected = {(r[0], r[1]) for r in rows}
    got = set(
        zip(
            map(str, result.user_vocab.raw(result.users)),
            map(str, result.item_vocab.raw(result.items)),
            strict=True,
        )
    )
    assert got == expected
    assert len(result) == len(expected)
    assert np.isfinite(result.timestamps).all()


def test_report_fuzz_case_count(capsys):
    """Runs after the fuzz test (file order) and reports how many cases were tried."""
    with capsys.disabled():
        print(
            f"\nfuzzed interaction files: {CASES['tried']} tried, {CASES['read']} read "
            f"correctly, {CASES['refused']} refused with a DataError"
        )
    assert CASES["tried"] == 0 or CASES["read"] + CASES["refused"] == CASES["tried"]
