"""`suti index build` and `suti index query`: thin wiring over `retrieval`."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from retrieval.search import DEFAULT_MEMBER_ORDER
from suti.errors import InputError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_bytes(text: str) -> int:
    """'2G', '500M', '1000000' -> bytes (decimal units)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)b?\s*", text.lower())
    if not m:
        raise InputError(f"memory budget must look like 500M, 2G or a number of bytes, got {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


@app.command()
def build(
    out: Path = typer.Option(..., "--out", help="Index directory to write."),
    images: Path = typer.Option(None, "--images", help="Folder of images with captions.jsonl ({file, caption, url?})."),
    dataset: Path = typer.Option(None, "--dataset", help="A `datasets` save_to_disk dir (image, caption, url...)."),
    split: str = typer.Option(None, "--split", help="Split to use when --dataset holds several."),
    model_name: str = typer.Option(..., "--model-name", help="open_clip model name (or local-dir:PATH)."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="Local open_clip weights file."),
    model_config: Path = typer.Option(None, "--model-config", help="open_clip model config .json to register first."),
    mine_clusters: bool = typer.Option(False, "--mine/--no-mine", help="Mine clusters (URL groups + CLIP filters)."),
    min_medoid_cos: float = typer.Option(0.6, "--min-medoid-cos", help="Mining: min image-to-page-medoid cosine."),
    min_caption_cos: float = typer.Option(0.2, "--min-caption-cos", help="Mining: min image-caption cosine."),
    dedup_cos: float = typer.Option(0.94, "--dedup-cos", help="Mining: cosine at which an image is a near-duplicate."),
    min_cluster_size: int = typer.Option(3, "--min-cluster-size", help="Mining: smallest cluster kept."),
    max_cluster_size: int = typer.Option(64, "--max-cluster-size", help="Mining: largest cluster (best rows kept)."),
    max_group_rows: int = typer.Option(4096, "--max-group-rows", help="Mining: a bigger page is sampled to this."),
    engine: str = typer.Option("local", "--engine", help="Mining engine: local (in-process) or spark."),
    spark_master: str = typer.Option("local[*]", "--spark-master", help="Spark master URL for --engine spark."),
    memory_budget: str = typer.Option(None, "--memory-budget", help="Resident memory budget of the index, e.g. 2G."),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per model batch."),
    shard_size: int = typer.Option(4096, "--shard-size", help="Rows per embedding shard (resume unit)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Embed captioned images, optionally mine clusters, and build a FAISS index."""
    from retrieval import ClipSpec, MineConfig, build_from_rows, load_embedder, read_captions_folder, read_dataset_dir

    if (images is None) == (dataset is None):
        raise InputError("give exactly one of --images DIR or --dataset DIR")
    if engine not in ("local", "spark"):
        raise InputError(f"--engine must be local or spark, got {engine!r}")
    if engine == "spark" and not mine_clusters:
        raise InputError("--engine spark runs the mining stage: add --mine")
    source = read_captions_folder(images) if images is not None else read_dataset_dir(dataset, split)
    spec = ClipSpec(model_name, checkpoint=_abs(checkpoint), config=_abs(model_config))
    mining = MineConfig(min_medoid_cos, min_caption_cos, dedup_cos, min_cluster_size, max_cluster_size,
                        max_group_rows=max_group_rows).check()  # fmt: skip
    report = build_from_rows(
        source, out, load_embedder(spec, batch_size), mine_config=mining if mine_clusters else None,
        memory_budget_bytes=parse_bytes(memory_budget) if memory_budget else None, batch_size=batch_size,
        shard_size=shard_size, progress=progress, engine=engine,
        engine_options={"master": spark_master} if engine == "spark" else None,
    )  # fmt: skip
    info = report.index
    ev = info.evaluation
    typer.echo(f"embedded {report.embed.rows} new rows ({report.embed.shards_skipped} shards reused, "
               f"{report.embed.images_per_second:.1f} images/s)")  # fmt: skip
    if report.embed.images_skipped:
        typer.echo(f"skipped {report.embed.images_skipped} unreadable image(s), e.g. {report.embed.skipped[0]}")
    if report.mine is not None:
        typer.echo(f"mined {report.mine['clusters']} clusters, kept {report.mine['kept']}/{report.mine['rows']} rows")
    typer.echo(f"wrote {info.index_key} index of {info.n_vectors} x {info.dim} to {out} "
               f"(recall@{ev['k']} {ev['recall_at_k']:.3f}, {ev['latency_ms_median']:.2f} ms/query)")  # fmt: skip


@app.command()
def query(
    index: Path = typer.Option(..., "--index", help="Index directory written by `suti index build`."),
    text: str = typer.Option(None, "--text", help="Text query."),
    image: Path = typer.Option(None, "--image", help="Image query (file)."),
    k: int = typer.Option(5, "-k", "--k", help="Number of neighbours."),
    same_cluster: bool = typer.Option(True, "--same-cluster/--any-cluster", help="Return members of the best cluster."),
    choose_cluster: str = typer.Option("auto", "--choose-cluster", help="How --same-cluster picks the cluster: "
                                       "captions (caption coverage, text queries), vectors (dense shortlist) or auto."),
    member_order: str = typer.Option(DEFAULT_MEMBER_ORDER, "--member-order", help="Which members of that cluster come first: "
                                     "central (the views it agrees on) or query (closest to the query)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per neighbour."),
    model_name: str = typer.Option(None, "--model-name", help="Override the model recorded in the index."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="Override the checkpoint recorded in the index."),
    model_config: Path = typer.Option(None, "--model-config", help="open_clip model config .json to register first."),
) -> None:
    """Print the nearest neighbours of a text or image query."""
    import json

    from retrieval import ClipSpec, NeighborRetriever, load_embedder
    from retrieval.runner import read_embedder_spec

    if (text is None) == (image is None):
        raise InputError("give exactly one of --text or --image")
    if image is not None and not image.is_file():
        raise InputError(f"query image {image} not found")
    if not index.is_dir():
        raise InputError(f"index directory {index} not found")
    if model_name is None:
        spec = read_embedder_spec(index)
    else:
        spec = ClipSpec(model_name, _abs(checkpoint), _abs(model_config))
    retriever = NeighborRetriever(index, embedder=load_embedder(spec), choose_cluster=choose_cluster,
                                  member_order=member_order)  # fmt: skip
    same = same_cluster and retriever.cluster_column is not None
    hits = retriever.search(text if text is not None else image, k=k, same_cluster=same)
    if hits.chosen_by is not None and not as_json:
        typer.echo(f"cluster {hits.cluster} (chosen by {hits.chosen_by})")
    for rank in range(len(hits)):
        row = {"rank": rank + 1, "score": round(float(hits.scores[rank]), 5), "id": hits.ids[rank],
               "cluster": int(hits.clusters[rank]), "caption": hits.captions[rank], "url": hits.urls[rank]}  # fmt: skip
        if as_json:
            typer.echo(json.dumps(row))
        else:
            typer.echo(f"{row['rank']:>3}  {row['score']:+.4f}  id={row['id']}  cluster={row['cluster']}  "
                       f"{row['caption']}")  # fmt: skip
    if not len(hits):
        typer.echo("no neighbours found", err=True)


def _abs(path: Path | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().absolute())


def main(argv: list[str] | None = None) -> int:
    """Run in-process; returns the exit code (2 and one line on stderr for a user error)."""
    from tools.cli import run_app

    return run_app(app, argv, "suti index")


if __name__ == "__main__":
    raise SystemExit(main())
