"""Named datasets: resolved from ``$NCF_DATA_DIR``, then the user cache, then downloaded.

Downloads use the publishers' official URLs and are checked against a known checksum before
they are unpacked. Without network access the error says where to put the files by hand.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ncf.data.interactions import Interactions
from ncf.data.io import read_interactions, read_item_titles, read_ncf_negative
from ncf.data.vocabulary import Vocabulary
from ncf.errors import DatasetNotFoundError

NCF_COMMIT = "4aab159e81c44b062c091bdaed0ab54ac632371f"
_NCF_RAW = f"https://raw.githubusercontent.com/hexiangnan/neural_collaborative_filtering/{NCF_COMMIT}/Data/"


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset comes from and which files make it up."""

    name: str
    ratings: str
    titles: str | None
    url: str | None
    md5: str | None = None
    # For per-file downloads (the NCF split): file name -> git blob sha1.
    files: dict[str, str] = field(default_factory=dict)


DATASETS: dict[str, DatasetSpec] = {
    "ml-100k": DatasetSpec(
        "ml-100k",
        "u.data",
        "u.item",
        "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        md5="0e33842e24a9c977be4e0107933c0723",
    ),
    "ml-1m": DatasetSpec(
        "ml-1m",
        "ratings.dat",
        "movies.dat",
        "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        md5="c4d9eecfca2ab87c1945afe126590906",
    ),
    "ml-latest-small": DatasetSpec(
        "ml-latest-small",
        "ratings.csv",
        "movies.csv",
        "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip",
        md5=None,  # "latest" changes over time: the published .md5 file is fetched instead
    ),
    "ncf-ml-1m": DatasetSpec(
        "ncf-ml-1m",
        "ml-1m.train.rating",
        None,
        _NCF_RAW,
        files={
            "ml-1m.train.rating": "31ba384fd58dac8fbd09d2dfc6616431f3563ab5",
            "ml-1m.test.rating": "1b79e03c96710c3b0c35deb19155ef74f7965a02",
            "ml-1m.test.negative": "c82844fb99d021f94751a6f915a230a1e8b8da92",
        },
    ),
}


@dataclass
class Dataset:
    """A loaded dataset: its interactions and, where the dataset has them, item titles."""

    name: str
    interactions: Interactions
    titles: dict[object, str] = field(default_factory=dict)
    path: Path | None = None

    def title(self, raw_item: object) -> str:
        return self.titles.get(raw_item, str(raw_item))


def data_dirs() -> list[Path]:
    """Search order: ``$NCF_DATA_DIR``, then the user cache (``$NCF_CACHE_DIR`` or XDG)."""
    dirs = []
    if os.environ.get("NCF_DATA_DIR"):
        dirs.append(Path(os.environ["NCF_DATA_DIR"]).expanduser())
    dirs.append(cache_dir())
    return dirs


def cache_dir() -> Path:
    if os.environ.get("NCF_CACHE_DIR"):
        return Path(os.environ["NCF_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ncf" / "datasets"


def dataset_path(name: str, *, download: bool = True, required: str | None = None) -> Path:
    """The folder holding dataset ``name``, downloading it into the cache if needed."""
    spec = _spec(name)
    wanted = required or spec.ratings
    for base in data_dirs():
        if (base / name / wanted).is_file():
            return base / name
    if download and spec.url:
        try:
            return _download(spec)
        except OSError as exc:
            reason = f"download failed ({exc})"
    else:
        reason = "downloads are disabled"
    places = " or ".join(str(d / name) for d in data_dirs())
    raise DatasetNotFoundError(
        f"dataset {name!r}: {wanted} not found and {reason}. Put the files in {places} "
        f"(set NCF_DATA_DIR to a folder that contains a {name}/ folder)"
    )


def load_dataset(name: str, *, download: bool = True) -> Dataset:
    """Load a dataset by name (see ``DATASETS``) as `Interactions` plus titles."""
    spec = _spec(name)
    folder = dataset_path(name, download=download)
    interactions = read_interactions(folder / spec.ratings)
    titles = {}
    if spec.titles and (folder / spec.titles).is_file():
        titles = read_item_titles(folder / spec.titles)
    return Dataset(name, interactions, titles, folder)


@dataclass
class NCFTestSet:
    """The NCF paper's released test half: one held-out item and 99 negatives per user."""

    users: np.ndarray
    items: np.ndarray
    negatives: np.ndarray
    test: Interactions


def load_ncf_test(name: str = "ncf-ml-1m", *, download: bool = True) -> NCFTestSet:
    """Read ``ml-1m.test.rating`` and ``ml-1m.test.negative`` in the paper's index space.

    Ids in these files are already 0-based indices (users 0..6039, items 0..3705), so the
    vocabularies are the identity over the range the files cover.
    """
    folder = dataset_path(name, download=download, required="ml-1m.test.negative")
    users, items, negatives = read_ncf_negative(folder / "ml-1m.test.negative")
    rating = read_interactions(folder / "ml-1m.test.rating")
    n_users = int(max(users.max(), rating.user_vocab.ids.max())) + 1
    n_items = int(max(items.max(), negatives.max(), rating.item_vocab.ids.max())) + 1
    test = Interactions(
        rating.user_vocab.raw(rating.users),
        rating.item_vocab.raw(rating.items),
        Vocabulary(np.arange(n_users), "user"),
        Vocabulary(np.arange(n_items), "item"),
        timestamps=rating.timestamps,
        source=str(folder / "ml-1m.test.rating"),
    )
    return NCFTestSet(users, items, negatives, test)


def _spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise DatasetNotFoundError(
            f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)} (or give a file path)"
        )
    return DATASETS[name]


def _fetch(url: str, dest: Path) -> None:
    with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:
        shutil.copyfileobj(response, out)


def _download(spec: DatasetSpec) -> Path:
    """Download into the cache, verify the checksum, then move into place atomically."""
    target = cache_dir() / spec.name
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        tmp_path = Path(tmp)
        staged = tmp_path / spec.name
        staged.mkdir()
        if spec.files:  # per-file download checked against git blob ids
            for fname, blob in spec.files.items():
                _fetch(spec.url + fname, staged / fname)
                if git_blob_sha1(staged / fname) != blob:
                    raise OSError(f"checksum mismatch for {fname}")
        else:
            archive = tmp_path / "data.zip"
            _fetch(spec.url, archive)
            expected = spec.md5
            if expected is None:
                _fetch(spec.url + ".md5", tmp_path / "data.md5")
                expected = (tmp_path / "data.md5").read_text().split()[0]
            if _md5(archive) != expected:
                raise OSError(f"checksum mismatch for {spec.url}")
            with zipfile.ZipFile(archive) as zf:
                for member in zf.infolist():
                    inner = Path(member.filename)
                    if member.is_dir() or len(inner.parts) != 2 or ".." in inner.parts:
                        continue  # flat datasets: keep only <folder>/<file>, never escape
                    (staged / inner.name).write_bytes(zf.read(member))
        if target.exists():
            shutil.rmtree(target)
        os.replace(staged, target)
    return target


def _md5(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "md5").hexdigest()


def git_blob_sha1(path: Path) -> str:
    """The id git gives a file's content (``git hash-object``)."""
    data = Path(path).read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
