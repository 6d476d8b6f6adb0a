"""Write a world of cluster pages as a Hugging Face `datasets` dataset (save_to_disk), atomically.

The build happens in a temporary directory next to the output and is renamed into place at the end;
on any failure the temporary directory (and any parent directory the build created) is removed.
Same arguments => byte-identical files: rows depend only on (seed, cluster), PNG and Arrow encodings
are deterministic, and the dataset fingerprint in state.json (random or mtime-based by default in
`datasets`) is replaced by a hash of the build arguments.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from suti.errors import InputError
from suti.world.captions import vocabulary
from suti.world.context import STYLES
from suti.world.pages import NOISE_KINDS, check_plan_args, plan_cluster, render_row
from suti.world.render import check_size
from suti.world.traits import HELD_OUT_COMBOS, SPLITS

FORMAT_VERSION = 1
PAGES_PER_CHUNK = 8
MAX_WORKERS = 64


@dataclass(frozen=True)
class BuildConfig:
    """Everything a build depends on (and nothing else)."""

    clusters: int
    per_cluster: int
    size: int = 64
    seed: int = 0
    noise: float = 0.1
    styles: tuple[str, ...] = STYLES

    def check(self) -> BuildConfig:
        """Self, or InputError naming the first bad value."""
        check_plan_args(self.clusters, self.per_cluster, self.seed, self.noise)
        check_size(self.size)
        if not self.styles:
            raise InputError("styles must name at least one style")
        for style in self.styles:
            if style not in STYLES:
                raise InputError(f"unknown style {style!r}; choose from {', '.join(STYLES)}")
        return self

    def fingerprint(self) -> str:
        """A stable hash of the configuration (and the format version)."""
        blob = json.dumps({"v": FORMAT_VERSION, **asdict(self)}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def features():
    """The dataset's columns and types."""
    from datasets import Features, Image, Value

    return Features(
        {
            "image": Image(),
            "caption": Value("string"),
            "url": Value("string"),
            "cluster": Value("int32"),
            "subject_id": Value("int64"),
            "split": Value("string"),
            "attributes": Value("string"),
            "is_noise": Value("bool"),
            "noise_kind": Value("string"),
        }
    )


def encode_pages(config: BuildConfig, first: int, last: int) -> dict[str, list]:
    """Columns of pages first..last-1, images encoded as PNG (runs in worker processes)."""
    import io

    cols: dict[str, list] = {name: [] for name in features()}
    for cluster in range(first, last):
        for row in plan_cluster(cluster, config.per_cluster, config.seed, config.noise, config.styles):
            buf = io.BytesIO()
            render_row(row, config.size).save(buf, format="PNG", compress_level=6)
            cols["image"].append({"bytes": buf.getvalue(), "path": None})
            cols["caption"].append(row.caption)
            cols["url"].append(row.url)
            cols["cluster"].append(row.cluster)
            cols["subject_id"].append(row.subject_id)
            cols["split"].append(row.split)
            cols["attributes"].append(json.dumps(row.attributes(), sort_keys=True, separators=(",", ":")))
            cols["is_noise"].append(row.is_noise)
            cols["noise_kind"].append(row.noise_kind)
    return cols


def _encode_star(args: tuple) -> dict[str, list]:
    return encode_pages(*args)


def _chunks(config: BuildConfig, workers: int) -> Iterator[dict[str, list]]:
    """Encoded chunks in cluster order, computed by `workers` processes (bounded look-ahead)."""
    spans = [(config, a, min(a + PAGES_PER_CHUNK, config.clusters)) for a in range(0, config.clusters, PAGES_PER_CHUNK)]
    if workers == 1:
        yield from (encode_pages(*s) for s in spans)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    # fork: workers only need numpy/PIL state, and it works from any __main__ (spawn does not).
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context(method)) as pool:
        pending: deque = deque()
        todo = iter(spans)
        for span in todo:
            pending.append(pool.submit(_encode_star, span))
            if len(pending) >= 4 * workers:
                break
        while pending:
            yield pending.popleft().result()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.submit(_encode_star, nxt))


def check_output_dir(out: Path, overwrite: bool) -> None:
    """InputError if `out` cannot become the dataset directory (checked before anything is written)."""
    if out.exists() and not out.is_dir():
        raise InputError(f"output path {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(f"output directory {out} already exists and is not empty (pass --overwrite to replace it)")
    ancestor = out.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"cannot create {out}: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"cannot write to {ancestor} (permission denied)")


def _make_parents(path: Path) -> list[Path]:
    """mkdir -p, returning the directories that were created (deepest last)."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    created = []
    for p in reversed(missing):
        try:
            p.mkdir()
        except OSError as e:
            raise InputError(f"cannot create directory {p}: {e.strerror}") from e
        created.append(p)
    return created


def build_dataset(out: str | os.PathLike, config: BuildConfig, workers: int = 1, overwrite: bool = False,
                  progress: bool = True) -> Path:  # fmt: skip
    """Write the world described by `config` to `out` (a `datasets.load_from_disk` directory)."""
    config.check()
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        raise InputError(f"workers must be an integer from 1 to {MAX_WORKERS}, got {workers!r}")
    out = Path(out).expanduser().absolute()
    check_output_dir(out, overwrite)

    created = _make_parents(out.parent)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as e:
        _remove_empty(created)
        raise InputError(f"cannot write to {out.parent}: {e.strerror}") from e
    previous = tmp / "previous"
    try:
        _write(tmp, config, workers, progress)
        if out.exists():
            out.rename(previous)  # only replaced once the new dataset is complete
        (tmp / "dataset").rename(out)
    except BaseException:
        if previous.exists() and not out.exists():
            previous.rename(out)  # put the old dataset back
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(created)
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def _remove_empty(dirs: list[Path]) -> None:
    for d in reversed(dirs):
        try:
            d.rmdir()
        except OSError:
            pass


def _write(tmp: Path, config: BuildConfig, workers: int, progress: bool) -> None:
    import datasets
    from datasets.arrow_writer import ArrowWriter
    from tqdm import tqdm

    feats = features()
    staging = tmp / "staging.arrow"
    counts = {s: 0 for s in SPLITS}
    noise_counts = {k: 0 for k in NOISE_KINDS}
    rows = 0
    with ArrowWriter(features=feats, path=str(staging)) as writer:
        with tqdm(total=config.clusters, unit="page", desc="world build", disable=not progress) as bar:
            for cols in _chunks(config, workers):
                writer.write_batch(cols)
                rows += len(cols["caption"])
                for split in cols["split"]:
                    counts[split] += 1
                for kind in cols["noise_kind"]:
                    if kind:
                        noise_counts[kind] += 1
                bar.update(len(set(cols["cluster"])))
        writer.finalize()

    info = datasets.DatasetInfo(description="SuTI subject world: web-like cluster pages", features=feats)
    table = datasets.Dataset.from_file(str(staging)).data
    ds = datasets.Dataset(table, info=info, fingerprint=config.fingerprint())
    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        ds.save_to_disk(str(tmp / "dataset"))
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()
    del ds, table
    manifest = {
        "format_version": FORMAT_VERSION,
        "config": asdict(config),
        "fingerprint": config.fingerprint(),
        "rows": rows,
        "rows_per_split": counts,
        "noise_rows": noise_counts,
        "held_out_combos": sorted(list(c) for c in HELD_OUT_COMBOS),
        "vocabulary": vocabulary(),
    }
    (tmp / "dataset" / "world.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
