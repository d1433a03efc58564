"""Readers for interaction files: CSV/TSV, Parquet, MovieLens and the NCF paper's files.

Every reader returns an `Interactions` (or, for `.negative` files, arrays) and raises
`DataError` naming the file, line and field on malformed input.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ncf.data.interactions import Interactions
from ncf.errors import DataError

FORMATS = ("auto", "csv", "parquet", "movielens-100k", "movielens-1m", "movielens-csv", "ncf")
_ROLES = ("user", "item", "rating", "timestamp", "weight", "label")


def read_interactions(
    path: str | Path,
    *,
    format: str = "auto",
    sep: str | None = None,
    header: bool | None = None,
    columns: Sequence[str] | None = None,
    user_col: str | int = "user",
    item_col: str | int = "item",
    rating_col: str | int | None = None,
    timestamp_col: str | int | None = None,
    label_col: str | int | None = None,
    weight_col: str | int | None = None,
    rating_threshold: float | None = None,
) -> Interactions:
    """Read an interaction file into `Interactions`.

    Args:
        path: the file, or a folder of Parquet shards.
        format: one of ``FORMATS``; ``auto`` guesses from the name (``u.data``, ``ratings.dat``,
            ``ratings.csv``, ``*.rating``, ``*.parquet``, else delimited text).
        sep: delimiter for delimited text (``","``, ``"\\t"``, ``"::"``, ...); sniffed if None.
        header: whether the first line names the columns; guessed if None.
        columns: names for the columns of a header-less file, e.g. ``["user", "item", "rating"]``;
            without them, columns are user, item, rating, timestamp in that order.
        user_col, item_col, rating_col, timestamp_col, label_col, weight_col: the column for
            each role, by name or 0-based position. Defaults find columns named after the role.
        rating_threshold: keep only ratings >= threshold as positives (default: all count).
    """
    path = Path(path)
    fmt = _detect_format(path) if format == "auto" else format
    if fmt not in FORMATS:
        raise DataError(f"unknown format {format!r}; expected one of {FORMATS}", path=str(path))
    if path.is_dir() and fmt in ("csv", "parquet"):
        fmt = "parquet"  # a folder of Parquet shards (e.g. one per writer) reads as one table
    elif not path.is_file():
        raise DataError("file not found", path=str(path))
    if fmt == "parquet":
        frame = _read_parquet(path)
        line_offset = 0
    else:
        sep, header, columns = _format_defaults(fmt, path, sep, header, columns)
        frame, line_offset = _read_delimited(path, sep, header, columns)
    roles = {
        "user": user_col,
        "item": item_col,
        "rating": rating_col,
        "timestamp": timestamp_col,
        "label": label_col,
        "weight": weight_col,
    }
    frame = _select_roles(frame, roles, str(path))
    _check_numeric(frame, str(path), line_offset)
    return Interactions.from_frame(frame, rating_threshold=rating_threshold, source=str(path))


def read_ncf_negative(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read an NCF ``.negative`` file: ``(user,item)\\tneg_1\\t...\\tneg_N`` per line.

    Returns ``(users, items, negatives)`` as int64 arrays of shape (n,), (n,), (n, N), in the
    file's own 0-based index space.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path=str(path))
    try:
        raw = pd.read_csv(path, sep="\t", header=None, dtype=str, skip_blank_lines=False)
    except pd.errors.EmptyDataError:
        raise DataError("the file is empty", path=str(path)) from None
    except pd.errors.ParserError as exc:
        raise DataError(f"rows have different numbers of fields ({exc})", path=str(path)) from None
    raw = raw.dropna(how="all")
    if raw.shape[1] < 2:
        raise DataError("expected '(user,item)' then tab-separated negatives", path=str(path))
    pair = raw[0].str.extract(r"^\((\-?\d+),\s*(\-?\d+)\)$")
    bad = pair[0].isna().to_numpy()
    if bad.any():
        line = int(raw.index[np.flatnonzero(bad)[0]]) + 1
        raise DataError(
            f"expected '(user,item)', got {raw.iloc[np.flatnonzero(bad)[0], 0]!r}",
            path=str(path),
            line=line,
            field="(user,item)",
        )
    negs = raw.iloc[:, 1:].apply(pd.to_numeric, errors="coerce")
    bad_neg = negs.isna().to_numpy()
    if bad_neg.any():
        r, c = np.argwhere(bad_neg)[0]
        raise DataError(
            "expected an integer item id",
            path=str(path),
            line=int(raw.index[r]) + 1,
            field=f"negative {c + 1}",
        )
    return (
        pair[0].to_numpy(np.int64),
        pair[1].to_numpy(np.int64),
        negs.to_numpy(np.int64),
    )


def read_item_titles(path: str | Path) -> dict[object, str]:
    """Item titles from MovieLens ``u.item`` (pipe, Latin-1) or ``movies.dat``/``movies.csv``."""
    path = Path(path)
    if path.name == "u.item":
        frame = pd.read_csv(path, sep="|", header=None, encoding="latin-1", usecols=[0, 1])
    elif path.suffix == ".dat":
        frame = pd.read_csv(
            path, sep="::", header=None, engine="python", encoding="latin-1", usecols=[0, 1]
        )
    else:
        frame = pd.read_csv(path, usecols=[0, 1])
    return dict(zip(frame.iloc[:, 0].tolist(), frame.iloc[:, 1].astype(str).tolist(), strict=True))


# ---------------------------------------------------------------------------- helpers
def _detect_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name == "u.data":
        return "movielens-100k"
    if name == "ratings.dat":
        return "movielens-1m"
    if name == "ratings.csv":
        return "movielens-csv"
    if name.endswith(".rating"):
        return "ncf"
    return "csv"


def _format_defaults(
    fmt: str, path: Path, sep: str | None, header: bool | None, columns: Sequence[str] | None
) -> tuple[str, bool, Sequence[str] | None]:
    ml_columns = ["user", "item", "rating", "timestamp"]
    if fmt in ("movielens-100k", "ncf"):
        return sep or "\t", bool(header), columns or ml_columns
    if fmt == "movielens-1m":
        return sep or "::", bool(header), columns or ml_columns
    if fmt == "movielens-csv":
        return sep or ",", True if header is None else header, columns
    if sep is None or header is None:
        sniff_sep, sniff_header = _sniff(path)
        sep = sep or sniff_sep
        header = sniff_header if header is None else header
    return sep, header, columns


def _sniff(path: Path) -> tuple[str, bool]:
    """Guess the delimiter from the first non-empty line, and whether that line is a header.

    It is a header when it names a role (``user``, ``item``, ...) or has no numeric field
    while the next line has one.
    """
    lines: list[str] = []
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        for line in handle:
            if line.strip():
                lines.append(line.rstrip("\r\n"))
            if len(lines) == 2:
                break
    if not lines:
        raise DataError("the file is empty", path=str(path))
    first = lines[0]
    sep = next((s for s in ("::", "\t", ",", ";", "|") if s in first), " ")

    def fields(line: str) -> list[str]:
        return [f.strip() for f in (line.split(sep) if sep != " " else line.split())]

    head = fields(first)
    names = {"userid", "itemid", "movieid", "user_id", "item_id", *_ROLES}
    numeric_first = sum(_is_number(f) for f in head)
    numeric_second = sum(_is_number(f) for f in fields(lines[1])) if len(lines) > 1 else 0
    header = any(f.lower() in names for f in head) or (numeric_first == 0 and numeric_second > 0)
    return (r"\s+" if sep == " " else sep), header


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_delimited(
    path: Path, sep: str, header: bool, columns: Sequence[str] | None
) -> tuple[pd.DataFrame, int]:
    """Read all fields as strings; the frame's index is the 1-based line number."""
    engine = "python" if len(sep) > 1 and sep != r"\s+" else "c"
    if not header and columns is None:
        # Header-less without names: the MovieLens convention user, item, rating, timestamp.
        # Naming the widest row's fields up front makes a short row read as missing fields on
        # its own line, instead of a parser error blamed on a later line.
        default = ["user", "item", "rating", "timestamp"]
        width = max(2, _max_fields(path, sep))
        columns = [default[i] if i < 4 else f"column{i}" for i in range(width)]
    try:
        frame = pd.read_csv(
            path,
            sep=sep,
            header=0 if header else None,
            names=None if header else columns,
            dtype=str,
            engine=engine,
            skip_blank_lines=False,
            encoding="utf-8-sig",
            keep_default_na=False,
            na_values=[""],
        )
    except pd.errors.EmptyDataError:
        raise DataError("the file is empty", path=str(path)) from None
    except pd.errors.ParserError as exc:
        line = _parser_error_line(str(exc))
        raise DataError(
            f"wrong number of fields ({_short(exc)}); check the delimiter {sep!r}",
            path=str(path),
            line=line,
        ) from None
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc.reason})", path=str(path)) from None
    first_line = 2 if header else 1
    frame.index = np.arange(first_line, first_line + len(frame))
    frame = frame.dropna(how="all")
    if header and columns:
        if len(columns) != frame.shape[1]:
            raise DataError(
                f"{len(columns)} column names given for {frame.shape[1]} columns", path=str(path)
            )
        frame.columns = list(columns)
    names = [str(c) for c in frame.columns]
    mangled = [n for n in names if re.fullmatch(r"(.+)\.\d+", n) and n.rsplit(".", 1)[0] in names]
    if header and (frame.columns.duplicated().any() or mangled):
        dup = (
            mangled[0].rsplit(".", 1)[0]
            if mangled
            else frame.columns[frame.columns.duplicated()][0]
        )
        raise DataError(f"duplicate column name {dup!r} in the header", path=str(path), line=1)
    if len(frame) == 0:
        raise DataError("the file has no data rows", path=str(path))
    return frame, 0


def _max_fields(path: Path, sep: str, max_lines: int = 10_000) -> int:
    """The most fields on any of the first ``max_lines`` non-empty lines."""
    widest = 0
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        for number, line in enumerate(handle):
            if number >= max_lines:
                break
            text = line.rstrip("\r\n")
            if text.strip():
                fields = text.split() if sep == r"\s+" else text.split(sep)
                widest = max(widest, len(fields))
    return widest


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise DataError(f"not a readable Parquet file ({_short(exc)})", path=str(path)) from None
    if len(frame) == 0:
        raise DataError("the file has no data rows", path=str(path))
    frame.index = np.arange(len(frame))
    return frame


def _select_roles(
    frame: pd.DataFrame, roles: dict[str, str | int | None], path: str
) -> pd.DataFrame:
    """Rename the chosen columns to role names; keep only roles that are present."""
    selected: dict[str, pd.Series] = {}
    names = [str(c) for c in frame.columns]
    aliases = {
        "user": ("userid", "user_id", "uid"),
        "item": ("itemid", "item_id", "movieid", "movie_id", "iid"),
    }
    for role, spec in roles.items():
        if isinstance(spec, int) and not isinstance(spec, bool):
            if spec >= frame.shape[1] or spec < 0:
                raise DataError(
                    f"column position {spec} for {role} is out of range; the file has "
                    f"{frame.shape[1]} columns",
                    path=path,
                    field=role,
                )
            selected[role] = frame.iloc[:, spec]
            continue
        wanted = spec if spec is not None else role
        candidates = [wanted, *aliases.get(role, ())] if spec in (None, role) else [wanted]
        match = next((frame.columns[names.index(c)] for c in candidates if c in names), None)
        if match is None:
            lower = [n.lower() for n in names]
            match = next(
                (frame.columns[lower.index(c.lower())] for c in candidates if c.lower() in lower),
                None,
            )
        if match is None:
            if role in ("user", "item") or spec is not None:
                raise DataError(
                    f"missing column {wanted!r}; columns present: {names}", path=path, field=role
                )
            continue
        selected[role] = frame[match]
    out = pd.DataFrame(selected)
    out.index = frame.index
    return out


def _check_numeric(frame: pd.DataFrame, path: str, line_offset: int) -> None:
    """Raise a DataError naming the line of the first non-numeric value in a numeric field."""
    for role in ("rating", "timestamp", "weight", "label"):
        if role not in frame.columns:
            continue
        values = pd.to_numeric(frame[role], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"expected a finite number, got {frame[role].iloc[pos]!r}",
                path=path,
                line=int(frame.index[pos]) + line_offset,
                field=role,
            )
        frame[role] = values
    for role in ("user", "item"):
        col = frame[role]
        missing = col.isna().to_numpy()
        if missing.any():
            pos = int(np.flatnonzero(missing)[0])
            raise DataError(
                "missing id (is the delimiter right, or the last line truncated?)",
                path=path,
                line=int(frame.index[pos]) + line_offset,
                field=role,
            )
        if col.dtype == object or pd.api.types.is_string_dtype(col):
            stripped = col.astype(str).str.strip()
            empty = (stripped == "").to_numpy()
            if empty.any():
                pos = int(np.flatnonzero(empty)[0])
                raise DataError(
                    "empty id", path=path, line=int(frame.index[pos]) + line_offset, field=role
                )
            frame[role] = _integer_ids(stripped)


def _integer_ids(text: pd.Series) -> pd.Series:
    """int64 ids when every value is a canonical int64 literal ("7", "-3"), else the strings.

    "007", "7.0" or values beyond int64 stay strings, so distinct raw ids never merge.
    """
    numeric = pd.to_numeric(text, errors="coerce")
    if numeric.isna().any() or numeric.dtype.kind != "i":
        return text
    if not (numeric.astype(str) == text).all():
        return text
    return numeric.astype(np.int64)


def _parser_error_line(message: str) -> int | None:
    match = re.search(r"line (\d+)", message)
    return int(match.group(1)) if match else None


def _short(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
