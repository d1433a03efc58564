"""The ``ncf`` command line: data, train, evaluate, recommend, similar, compare.

Progress and logs go to stderr; ``--json`` prints one JSON document on stdout. Errors are one
line and a non-zero exit code (2 for bad input), with a traceback only under ``--debug``.
"""

from __future__ import annotations

import json
import os
import sys
import time
import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ncf import __version__
from ncf.errors import NCFError

app = typer.Typer(
    name="ncf",
    help="Neural collaborative filtering for implicit feedback.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect and split interaction data.", no_args_is_help=True)
app.add_typer(data_app, name="data")
err = Console(stderr=True, soft_wrap=True)
out = Console(width=max(120, Console().width))  # tables stay readable when piped
_STATE = {"debug": False}

DatasetArg = Annotated[str, typer.Argument(help="Dataset name (ml-100k, ...) or file path.")]
FormatOpt = Annotated[str, typer.Option("--format", help="File format (auto, csv, parquet, ...).")]
SepOpt = Annotated[str | None, typer.Option("--sep", help="Delimiter for delimited text.")]
UserColOpt = Annotated[str, typer.Option("--user-col", help="User column: name or position.")]
ItemColOpt = Annotated[str, typer.Option("--item-col", help="Item column: name or position.")]
TimeColOpt = Annotated[str | None, typer.Option("--timestamp-col", help="Timestamp column.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for the split and sampling.")]


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    _STATE["debug"] = debug
    if version:
        print(__version__)
        raise typer.Exit()


# ---------------------------------------------------------------------------- data loading
def _col(value: str | None) -> str | int | None:
    if value is None:
        return None
    return int(value) if value.isdigit() else value


def load_data(
    dataset: str,
    fmt: str = "auto",
    sep: str | None = None,
    user_col: str = "user",
    item_col: str = "item",
    timestamp_col: str | None = None,
) -> tuple[Any, dict]:
    """``(Interactions, titles)`` for a registered dataset name or a file path."""
    from ncf.data import DATASETS, load_dataset, read_interactions

    if dataset in DATASETS:
        ds = load_dataset(dataset)
        return ds.interactions, ds.titles
    path = Path(dataset)
    if not path.exists():
        raise typer.BadParameter(
            f"{dataset!r} is neither a known dataset ({', '.join(DATASETS)}) nor an existing file"
        )
    data = read_interactions(
        path,
        format=fmt,
        sep=sep,
        user_col=_col(user_col),
        item_col=_col(item_col),
        timestamp_col=_col(timestamp_col),
    )
    return data, {}


def _emit_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


# ---------------------------------------------------------------------------- data
@data_app.command("stats")
def data_stats(
    dataset: DatasetArg,
    fmt: FormatOpt = "auto",
    sep: SepOpt = None,
    user_col: UserColOpt = "user",
    item_col: ItemColOpt = "item",
    as_json: JsonOpt = False,
) -> None:
    """Counts, density and activity of a dataset."""
    data, _ = load_data(dataset, fmt, sep, user_col, item_col)
    summary = {"dataset": dataset, **data.summary()}
    if as_json:
        _emit_json(summary)
        return
    table = Table(title=f"{dataset}")
    table.add_column("statistic")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(key, f"{value:.5g}" if isinstance(value, float) else str(value))
    out.print(table)


@data_app.command("split")
def data_split(
    dataset: DatasetArg,
    output: Annotated[Path, typer.Option("--out", "-o", help="Folder for the CSV files.")],
    method: Annotated[str, typer.Option(help="leave-one-out or random.")] = "leave-one-out",
    validation: Annotated[bool, typer.Option(help="Also carve validation from train.")] = True,
    seed: SeedOpt = 0,
    fmt: FormatOpt = "auto",
    sep: SepOpt = None,
    user_col: UserColOpt = "user",
    item_col: ItemColOpt = "item",
) -> None:
    """Split a dataset and write train.csv, validation.csv and test.csv (raw ids)."""
    from ncf.data import train_validation_test

    data, _ = load_data(dataset, fmt, sep, user_col, item_col)
    split = train_validation_test(data, method=method, validation=validation, seed=seed)
    output.mkdir(parents=True, exist_ok=True)
    parts = {"train": split.train, "test": split.test, "validation": split.validation}
    for name, part in parts.items():
        if part is not None:
            part.to_frame().to_csv(output / f"{name}.csv", index=False)
            err.print(f"{name}: {len(part):,} interactions -> {output / (name + '.csv')}")


# ---------------------------------------------------------------------------- training
def _parse_value(text: str) -> Any:
    """A TOML value (``0.01``, ``[64, 32]``, ``true``, ``"adam"``) or a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        if "," in text and all(p.strip().isdigit() for p in text.split(",")):
            return [int(p) for p in text.split(",")]
        return text


def _read_config(path: Path) -> tuple[str | None, dict[str, Any]]:
    """A TOML file with optional ``model = "..."`` and parameters at the top or in [params]."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise typer.BadParameter(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise typer.BadParameter(f"config file {path}: invalid TOML ({exc})") from None
    model = doc.pop("model", None)
    params = dict(doc.pop("params", {}))
    for key, value in doc.items():
        if isinstance(value, dict):
            raise typer.BadParameter(f"config file {path}: unknown table [{key}]")
        params[key] = value
    return model, params


def collect_params(
    config: Path | None, model: str | None, sets: list[str] | None, **flags: Any
) -> tuple[str, dict[str, Any]]:
    """Merge config file < explicit flags < ``--set key=value``; return (model, params)."""
    file_model, params = _read_config(config) if config else (None, {})
    params.update({k: v for k, v in flags.items() if v is not None})
    for item in sets or []:
        if "=" not in item:
            raise typer.BadParameter(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        params[key.strip().replace("-", "_")] = _parse_value(value.strip())
    return model or file_model or "neumf", params


def train_and_evaluate(
    data: Any,
    model: str,
    params: dict[str, Any],
    *,
    seed: int,
    ci: bool = False,
    verbose: bool = True,
) -> tuple[Any, Any, dict[str, Any]]:
    """Split, fit on train with validation carved from it, evaluate once on test."""
    from ncf.data import train_validation_test
    from ncf.evaluation.holdout import evaluate_split, flat_metrics
    from ncf.recommender import Recommender

    split = train_validation_test(data, seed=seed)
    rec = Recommender(model, **params)
    start = time.perf_counter()
    rec.fit(split.train, validation=split.validation, verbose=verbose)
    seconds = time.perf_counter() - start
    if not _is_main_rank():  # distributed: rank 0 alone evaluates, writes and reports
        return rec, split, {}
    results = evaluate_split(rec.scorer(), split, seed=seed, ci=ci)
    metrics = {
        "model": model,
        **flat_metrics(results),
        "train_seconds": rec.fit_summary_.train_seconds or seconds,
        "samples_per_s": rec.fit_summary_.samples_per_s,
        "epochs": sum(r.get("phase") != "refit" for r in rec.fit_summary_.history),
        "refit_epochs": sum(r.get("phase") == "refit" for r in rec.fit_summary_.history),
        "best_epoch": rec.fit_summary_.best_epoch,
        "flags": rec.fit_summary_.flags,
        "evaluation": {name: r.to_dict() for name, r in results.items()},
    }
    return rec, split, metrics


@app.command()
def train(
    dataset: DatasetArg = "ml-100k",
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model or preset.")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML file of parameters.")] = None,
    output: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("runs/ncf"),
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Rows per step.")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    factors: Annotated[int | None, typer.Option(help="Predictive factors (MF/GMF/NeuMF).")] = None,
    negatives: Annotated[int | None, typer.Option(help="Negatives per positive.")] = None,
    l2: Annotated[float | None, typer.Option(help="L2 penalty on embeddings.")] = None,
    optimizer: Annotated[str | None, typer.Option(help="adam, adamw, adagrad, ...")] = None,
    refit: Annotated[
        bool | None,
        typer.Option(
            "--refit/--no-refit",
            help="After early stopping, train again on train + validation for the chosen "
            "epochs (default: the preset's choice).",
        ),
    ] = None,
    sets: Annotated[
        list[str] | None, typer.Option("--set", help="Any parameter as key=value (repeatable).")
    ] = None,
    seed: SeedOpt = 0,
    ci: Annotated[bool, typer.Option("--ci", help="Bootstrap 95% intervals.")] = False,
    fmt: FormatOpt = "auto",
    sep: SepOpt = None,
    user_col: UserColOpt = "user",
    item_col: ItemColOpt = "item",
    timestamp_col: TimeColOpt = None,
    as_json: JsonOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from OUT/checkpoints after a crash.")
    ] = False,
    workers: Annotated[
        int | None, typer.Option("--workers", help="Train with N processes (torchrun, DDP).")
    ] = None,
    device: Annotated[
        str, typer.Option("--device", help="cpu (gloo) or cuda (nccl): distributed only.")
    ] = "cpu",
) -> None:
    """Train a model, evaluate it on a held-out split, and write the model and a report.

    A checkpoint is written atomically to OUT/checkpoints after every epoch; `--resume`
    continues from it and ends with the same weights as an uninterrupted run.
    `--workers N` runs the same command under torchrun with N processes (see README).
    """
    if _distributed_launch(workers, device):
        return
    from ncf.models.presets import resolve
    from ncf.report import write_report

    name, params = collect_params(
        config,
        model,
        sets,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        factors=factors,
        negatives=negatives,
        l2=l2,
        optimizer=optimizer,
        refit=refit,
        seed=seed,
    )
    params.setdefault("checkpoint_dir", str(output / "checkpoints"))
    params["resume"] = resume
    resolve(name, **params)  # a bad name or parameter fails before any data is read
    data, titles = load_data(dataset, fmt, sep, user_col, item_col, timestamp_col)
    if _is_main_rank():
        err.print(f"training {name} on {dataset}: {data}")
    rec, _, metrics = train_and_evaluate(
        data, name, params, seed=seed, ci=ci, verbose=not quiet and not as_json
    )
    if not metrics:  # a distributed rank other than 0: done after training
        return
    metrics["dataset"] = dataset
    model_dir = output / "model"
    rec.save(
        model_dir,
        extra={
            "item_titles": {str(k): v for k, v in titles.items()},
            "metrics": {k: v for k, v in metrics.items() if k != "evaluation"},
            "training": {"dataset": dataset, "split": {"method": "leave-one-out", "seed": seed}},
        },
    )
    paths = write_report(output, metrics, rec.fit_summary_.history, f"{name} on {dataset}")
    metrics["model_dir"] = str(model_dir)
    metrics["report"] = {k: str(v) for k, v in paths.items()}
    if as_json:
        _emit_json(metrics)
        return
    _print_metrics_table(f"{name} on {dataset}", [metrics])
    for flag in metrics["flags"]:
        err.print(f"[yellow]warning:[/] {flag}")
    err.print(f"model: {model_dir}  report: {output}")


# ---------------------------------------------------------------------------- distributed
def _is_main_rank() -> bool:
    from ncf.training.distributed import is_main_process

    return is_main_process()


def _distributed_launch(workers: int | None, device: str) -> bool:
    """`ncf train --workers N`: re-run this command under torchrun; True when it did."""
    from ncf.training.distributed import is_distributed, launch, strip_option

    if device not in ("cpu", "cuda"):
        raise typer.BadParameter(f"--device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise typer.BadParameter("--device cuda was given but CUDA is not available")
    if workers is not None and workers < 1:
        raise typer.BadParameter(f"--workers must be a positive integer, got {workers}")
    if workers is None or is_distributed():  # already a torchrun rank: train here
        if device == "cuda" and not is_distributed():
            raise typer.BadParameter("--device cuda needs distributed training (--workers N)")
        os.environ["NCF_DEVICE"] = device
        return False
    argv = strip_option(_STATE.get("argv") or sys.argv[1:], "--workers")
    code = launch(argv, workers, device)
    if code:
        err.print(
            f"error: distributed training with {workers} workers failed (torchrun exit code "
            f"{code}); the failing rank's error is above",
            markup=False,
            highlight=False,
        )
        raise SystemExit(code)  # click would swallow typer.Exit's code here
    return True


_TABLE_COLUMNS = ("HR@10", "NDCG@10", "full_HR@10", "full_NDCG@10", "full_Recall@10")


def _print_metrics_table(title: str, rows: list[dict[str, Any]]) -> None:
    table = Table(title=title + "  (sampled 1+99 | full ranking)")
    table.add_column("model")
    for column in (*_TABLE_COLUMNS, "epochs", "seconds"):
        table.add_column(column, justify="right")
    for row in rows:
        cells = [f"{row[c]:.4f}" if isinstance(row.get(c), float) else "-" for c in _TABLE_COLUMNS]
        seconds = row.get("train_seconds")
        table.add_row(
            str(row.get("model")),
            *cells,
            str(row.get("epochs", "-")),
            f"{seconds:.1f}" if isinstance(seconds, float) else "-",
        )
    out.print(table)


# ---------------------------------------------------------------------------- using a model
ModelDir = Annotated[Path, typer.Argument(help="A model directory written by `ncf train`.")]


@app.command()
def evaluate(
    model_dir: ModelDir,
    dataset: Annotated[
        str | None, typer.Option(help="Dataset (default: the training one).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Split seed (default: training's).")] = None,
    ci: Annotated[bool, typer.Option("--ci/--no-ci", help="Bootstrap 95% intervals.")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Evaluate a saved model on its dataset's held-out split: sampled and full ranking."""
    from ncf.data import train_validation_test
    from ncf.data.interactions import Interactions
    from ncf.evaluation.holdout import evaluate_split, flat_metrics
    from ncf.recommender import Recommender

    rec = Recommender.load(model_dir)
    training = rec.config_.get("training", {})
    dataset = dataset or training.get("dataset")
    if not dataset:
        raise typer.BadParameter("the model does not record its dataset; pass --dataset")
    seed = training.get("split", {}).get("seed", 0) if seed is None else seed
    data, _ = load_data(dataset)
    frame = data.to_frame()
    # Map the dataset into the model's vocabularies; unknown ids cannot be evaluated.
    users = rec.user_vocab_.index(frame["user"].to_numpy(), missing="mask")
    items = rec.item_vocab_.index(frame["item"].to_numpy(), missing="mask")
    keep = (users >= 0) & (items >= 0)
    mapped = Interactions(
        users[keep],
        items[keep],
        rec.user_vocab_,
        rec.item_vocab_,
        timestamps=None if data.timestamps is None else data.timestamps[keep],
    )
    split = train_validation_test(mapped, seed=seed)
    results = evaluate_split(rec.scorer(), split, seed=seed, ci=ci)
    document = {
        "model_dir": str(model_dir),
        "dataset": dataset,
        **flat_metrics(results),
        "evaluation": {k: v.to_dict() for k, v in results.items()},
    }
    if as_json:
        _emit_json(document)
        return
    table = Table(title=f"{model_dir} on {dataset}")
    for column in ("protocol", "metric", "mean", "95% CI"):
        table.add_column(column, justify="right" if column != "protocol" else "left")
    for protocol, result in results.items():
        for metric, value in result.means.items():
            interval = (result.ci or {}).get(metric)
            ci_text = f"[{interval[0]:.4f}, {interval[1]:.4f}]" if interval else "-"
            table.add_row(protocol, metric, f"{value:.4f}", ci_text)
        for note in result.notes:
            err.print(f"note ({protocol}): {note}")
    out.print(table)


def _ids(values: list[str], vocab: Any) -> list[Any]:
    """Command-line ids are strings; for an integer vocabulary, integers where they parse."""
    if not vocab.is_integer:
        return values
    return [int(v) if v.lstrip("-").isdigit() else v for v in values]


@app.command()
def recommend(
    model_dir: ModelDir,
    users: Annotated[list[str], typer.Argument(help="Raw user ids.")],
    k: Annotated[int, typer.Option("-k", help="Items per user.")] = 10,
    include_seen: Annotated[bool, typer.Option(help="Also return seen items.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Top-k recommendations for users, with item titles where the model has them."""
    from ncf.recommender import Recommender

    rec = Recommender.load(model_dir)
    result = rec.recommend(_ids(users, rec.user_vocab_), k=k, exclude_seen=not include_seen)
    records = result.to_records()
    for record in records:
        for entry in record["items"]:
            entry["title"] = rec.title(entry["item"])
    if as_json:
        _emit_json({"k": k, "users": records})
        return
    for record in records:
        flag = "  [yellow](unknown user: popularity fallback)[/]" if record["fallback"] else ""
        _print_ranked(f"user {record['user']}{flag}", record["items"], "score")


@app.command()
def similar(
    model_dir: ModelDir,
    items: Annotated[list[str], typer.Argument(help="Raw item ids.")],
    k: Annotated[int, typer.Option("-k", help="Similar items per item.")] = 10,
    as_json: JsonOpt = False,
) -> None:
    """Items most similar to the given items (cosine over the model's item vectors)."""
    from ncf.recommender import Recommender

    rec = Recommender.load(model_dir)
    result = rec.similar_items(_ids(items, rec.item_vocab_), k=k)
    records = result.to_records()
    for record in records:
        record["item"] = record.pop("user")
        record["title"] = rec.title(record["item"])
        record.pop("fallback")
        for entry in record["items"]:
            entry["title"] = rec.title(entry["item"])
    if as_json:
        _emit_json({"k": k, "items": records})
        return
    for record in records:
        title = f"similar to {record['item']} {record['title'] or ''}"
        _print_ranked(title, record["items"], "cosine")


def _print_ranked(title: str, entries: list[dict[str, Any]], score_name: str) -> None:
    """One table of ranked items (rank, item, title, score)."""
    table = Table(title=title)
    for column in ("rank", "item", "title", score_name):
        table.add_column(column, justify="right" if column in ("rank", score_name) else "left")
    for rank, entry in enumerate(entries, 1):
        table.add_row(str(rank), str(entry["item"]), entry["title"] or "", f"{entry['score']:.4f}")
    out.print(table)


@app.command()
def compare(
    dataset: DatasetArg = "ml-100k",
    models: Annotated[
        str, typer.Option(help="Comma-separated models or presets.")
    ] = "mf,gmf,mlp,neumf",
    epochs: Annotated[int | None, typer.Option(help="Cap epochs for every model.")] = None,
    sets: Annotated[list[str] | None, typer.Option("--set", help="key=value for all.")] = None,
    seed: SeedOpt = 0,
    baselines: Annotated[
        bool,
        typer.Option(
            "--baselines/--no-baselines",
            help="Add implicit's ALS (also with recency weights) and BPR, tuned on "
            "validation (needs ncf[baselines]).",
        ),
    ] = True,
    baseline_trials: Annotated[
        int, typer.Option(help="Optuna trials for each of ALS and BPR.")
    ] = 20,
    baseline_timeout: Annotated[
        float | None, typer.Option(help="Seconds of search for each of ALS and BPR.")
    ] = 300.0,
    as_json: JsonOpt = False,
) -> None:
    """Train several models on one split and print one table (popularity included).

    With ``--baselines`` (default, when ``ncf[baselines]`` is installed), implicit's ALS and
    BPR are tuned on the validation split (same protocol, Optuna) and evaluated on test once.
    """
    from ncf.data import train_validation_test
    from ncf.evaluation.holdout import PopularityScorer, evaluate_split, flat_metrics

    data, _ = load_data(dataset)
    split = train_validation_test(data, seed=seed)
    popularity = PopularityScorer(split.train.item_counts() + split.validation.item_counts())
    rows = [{"model": "popularity", **flat_metrics(evaluate_split(popularity, split, seed=seed))}]
    for name in [m.strip() for m in models.split(",") if m.strip()]:
        _, params = collect_params(None, name, sets, epochs=epochs, seed=seed)
        err.print(f"training {name} ...")
        _, _, metrics = train_and_evaluate(data, name, params, seed=seed, verbose=False)
        metrics.pop("evaluation")
        rows.append(metrics)
    if baselines:
        rows += _baseline_rows(split, seed, baseline_trials, baseline_timeout)
    if as_json:
        _emit_json({"dataset": dataset, "rows": rows})
        return
    _print_metrics_table(f"compare on {dataset}", rows)


@app.command()
def serve(
    model_dir: ModelDir,
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    admin_key: Annotated[
        str | None,
        typer.Option(
            envvar="NCF_ADMIN_KEY",
            help="Key for /admin/* (header X-API-Key); without it admin is loopback-only.",
        ),
    ] = None,
    workers: Annotated[int, typer.Option(help="Worker processes (hot reload: use 1).")] = 1,
    max_batch: Annotated[int, typer.Option(help="Most users in one POST /recommend.")] = 256,
    cache_mb: Annotated[
        int, typer.Option(help="Largest per-user top-k cache for MLP/NeuMF, in MiB.")
    ] = 512,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = False,
) -> None:
    """Serve a model over HTTP (FastAPI + uvicorn); see the README's "Serving" section."""
    from ncf.serve import run

    if workers < 1 or max_batch < 1 or cache_mb < 0:
        raise typer.BadParameter("--workers and --max-batch must be >= 1, --cache-mb >= 0")
    if not model_dir.is_dir():
        raise typer.BadParameter(f"{model_dir}: not a model directory")
    err.print(f"serving {model_dir} on http://{host}:{port} (docs at /docs)")
    run(
        model_dir,
        host=host,
        port=port,
        admin_key=admin_key or None,
        workers=workers,
        max_batch=max_batch,
        cache_max_bytes=cache_mb * 2**20,
        access_log=access_log,
    )


def _baseline_rows(
    split: Any, seed: int, n_trials: int, timeout: float | None
) -> list[dict[str, Any]]:
    """Rows for ALS and BPR tuned on validation; none (with a note) without implicit.

    With timestamps, ALS also runs with our presets' recency weights as its confidences
    ("als + recency"), so the table compares models given the same data treatment.
    """
    from ncf.baselines import INSTALL_HINT, implicit_available, tune_baseline
    from ncf.evaluation.holdout import evaluate_split, flat_metrics
    from ncf.models.presets import RECENCY

    if not implicit_available():
        err.print(f"note: skipping ALS and BPR: {INSTALL_HINT}")
        return []
    _quiet_optuna()
    runs = [("als", "als", {})]
    if split.train.timestamps is not None:
        runs.append(("als + recency", "als", RECENCY))
    runs.append(("bpr", "bpr", {}))
    rows = []
    for label, algorithm, fixed in runs:
        err.print(f"tuning {label} (implicit) on validation: {n_trials} trials ...")
        model, study = tune_baseline(
            algorithm,
            split.train,
            split.validation,
            n_trials=n_trials,
            timeout=timeout,
            seed=seed,
            fixed=fixed,
            study_name=f"{label}-HR@10",
        )
        rows.append(
            {
                "model": f"{label} (tuned)",
                **flat_metrics(evaluate_split(model, split, seed=seed)),
                "train_seconds": float(model.train_seconds_),
                "validation": model.validation_,
                "params": model.params(),
                "trials": len(study.trials),
            }
        )
    return rows


def _quiet_optuna() -> None:
    """Optuna logs every trial at INFO; the CLI prints its own one-line progress instead."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


@app.command()
def tune(
    dataset: DatasetArg = "ml-100k",
    model: Annotated[str, typer.Option("--model", "-m", help="Model kind or preset.")] = "neumf",
    trials: Annotated[int, typer.Option("--trials", "-n", help="Finished trials wanted.")] = 20,
    timeout: Annotated[
        float | None, typer.Option(help="Stop starting new trials after this many seconds.")
    ] = None,
    metric: Annotated[str, typer.Option(help="Validation metric: HR@10 or NDCG@10.")] = "HR@10",
    max_epochs: Annotated[int, typer.Option(help="Epoch cap; early stopping decides.")] = 40,
    patience: Annotated[int, typer.Option(help="Early-stopping patience (epochs).")] = 5,
    config: Annotated[
        Path | None, typer.Option(help="TOML of parameters; searched ones are overridden.")
    ] = None,
    sets: Annotated[
        list[str] | None, typer.Option("--set", help="A fixed parameter as key=value.")
    ] = None,
    output: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("runs/tune"),
    study_name: Annotated[
        str | None, typer.Option(help="Study name in study.db (default: model-metric).")
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="torch CPU threads (default: torch's choice).")
    ] = None,
    seed: SeedOpt = 0,
    fmt: FormatOpt = "auto",
    sep: SepOpt = None,
    user_col: UserColOpt = "user",
    item_col: ItemColOpt = "item",
    timestamp_col: TimeColOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search hyper-parameters on the validation split (Optuna TPE + median pruning).

    Writes into --out: best.toml (for ncf train --config), trials.csv, two PNGs,
    study.db (rerun the same command to resume) and tune.json (scores: validation,
    and test for the chosen configuration, evaluated once).
    """
    from ncf.data import train_validation_test
    from ncf.models.presets import resolve
    from ncf.tuning import METRICS, write_report
    from ncf.tuning import tune as run_tune

    if metric not in METRICS:
        raise typer.BadParameter(f"--metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if trials < 1 or max_epochs < 1 or patience < 0 or (threads is not None and threads < 1):
        raise typer.BadParameter(
            "--trials, --max-epochs and --threads must be >= 1, --patience >= 0"
        )
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    name, base = collect_params(config, model, sets)
    for key in ("seed", "epochs", "early_stopping", "patience"):
        base.pop(key, None)  # set by the search itself
    resolve(name, **base)  # a bad name or parameter fails before any data is read
    data, _ = load_data(dataset, fmt, sep, user_col, item_col, timestamp_col)
    split = train_validation_test(data, seed=seed)
    output.mkdir(parents=True, exist_ok=True)
    err.print(f"tuning {name} on {dataset}: {data}; study in {output / 'study.db'}")
    _quiet_optuna()

    def progress(study: Any, trial: Any) -> None:
        value = "-" if trial.value is None else f"{trial.value:.4f}"
        try:
            best = f"{study.best_value:.4f} (#{study.best_trial.number})"
        except ValueError:
            best = "-"
        epochs = trial.user_attrs.get("epochs_run", "-")
        err.print(
            f"trial {trial.number}: {trial.state.name.lower()} {metric}={value} "
            f"epochs={epochs}  best {best}"
        )

    start = time.perf_counter()
    result = run_tune(
        split,
        name,
        n_trials=trials,
        timeout=timeout,
        metric=metric,
        seed=seed,
        max_epochs=max_epochs,
        patience=patience,
        storage=output / "study.db",
        study_name=study_name,
        base_params=base,
        callbacks=[progress],
    )
    paths = write_report(result, output, dataset)
    document = {
        "dataset": dataset,
        **result.summary(),
        "seconds": time.perf_counter() - start,
        "pruning": "median pruner on per-epoch validation " + metric,
        "files": {k: str(v) for k, v in paths.items()} | {"study": str(output / "study.db")},
    }
    (output / "tune.json").write_text(
        json.dumps(document, indent=2, default=_json_default) + "\n", encoding="utf-8"
    )
    if as_json:
        _emit_json(document)
        return
    table = Table(title=f"ncf tune {name} on {dataset}: {document['trials']} trials")
    for column in ("split", "HR@10", "NDCG@10", "full_HR@10", "full_NDCG@10"):
        table.add_column(column, justify="left" if column == "split" else "right")
    val = result.validation
    table.add_row(
        f"validation (best trial #{document['best_trial']})",
        *(f"{val[c]:.4f}" if c in val else "-" for c in ("HR@10", "NDCG@10")),
        "-",
        "-",
    )
    test = result.test
    table.add_row(
        "test (evaluated once)",
        *(f"{test[c]:.4f}" for c in ("HR@10", "NDCG@10", "full_HR@10", "full_NDCG@10")),
    )
    out.print(table)
    for key, value in document["tuned_params"].items():
        err.print(f"  {key} = {value}")
    err.print(f"config: {paths['config']}  report: {output}")


# ---------------------------------------------------------------------------- entry point
def main(argv: list[str] | None = None) -> int:
    """Console entry point: one-line errors unless ``--debug``."""
    args = sys.argv[1:] if argv is None else argv
    _STATE["argv"] = list(args)  # `train --workers N` re-runs these under torchrun
    debug = "--debug" in args
    try:
        app(args=args, standalone_mode=False)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
        return int(code or 0)
    except typer.Abort:
        err.print("aborted")
        return 130
    except Exception as exc:  # one clear line for every user-facing error
        if debug:
            raise
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # click's errors
            err.print(f"error: {exc.format_message()}", markup=False, highlight=False)
            return int(exc.exit_code) or 2
        known = isinstance(exc, NCFError | ValueError | FileNotFoundError | KeyError | OSError)
        message = str(exc) if known else f"{type(exc).__name__}: {exc}"
        err.print(f"error: {message}", markup=False, highlight=False)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
