"""Catalog retrieval on the world: held-out text -> cluster recall, and Re-Imagen mode end to end.

    python -m tools.bench.catalog_bench --out bench/catalog_world.json [--subjects 60] [--per-subject 8]
        [--queries-per-subject 5] [--gen-subjects 4] [--steps 25] [--model models/world]

1. Retrieval. A catalog of HELD-OUT subjects only (`benchmark_subject_ids`: test_subject and
   test_combo alternately), one world cluster page per subject (`plan_cluster`, noise 0: every row
   shows its subject in a random context, captioned by the world captioner), rendered at --size px,
   embedded with the trained world CLIP and indexed by `retrieval.build_from_rows` (the planner's
   FAISS index). Each query is a world caption of one subject in a context none of its catalog
   images shows (one skill per query). Reported: recall@1 / recall@5 of the subject's cluster over
   the top entries (`same_cluster=False`), and the cluster `same_cluster=True` (k = --retrieval-k)
   picks = top-1 cluster accuracy, chosen by caption coverage (`cluster_top1`, the default for text),
   by cluster-document BM25 (`cluster_top1_bm25`) and by the dense shortlist (`cluster_top1_vectors`);
   also how often the top entry merely has the same coarse traits (what a caption can say), per split
   and per skill, and `cluster_top1_bound`: the best any text-only choice can do when subjects with
   identical coarse traits are told apart by luck.
2. Re-Imagen. For the first --gen-subjects subjects, one query each through
   `pipe(prompt, retriever=..., retrieval_k=K)` (DDIM, --steps), graded by `Graders.score` for the
   subject the query is about (demos for dino / clip_i = that subject's catalog images). Reference
   points in the same run, same prompts and seeds: `ground_truth` (render of the prompt: ceiling),
   `text_only` (the same model without demos: subject floor), `oracle_demos` (the model given the
   right cluster's first K catalog images: generation without retrieval errors). Which members of
   the chosen cluster become demos is the retriever's `member_order` (--member-order, default
   "query"); the other order is measured too, on the same prompts and seeds: `reimagen_<order>` and
   `oracle_<order>` (the right cluster's K first members in that order).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

SCORES = ("subject", "text", "overall", "realism", "clip_t", "clip_i", "dino")
_QUERY_STREAM = 0xCA7A


def _count(lo: int, hi: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be an integer from {lo} to {hi}, got {value}")
        return value

    return parse


def build_catalog(subject_ids: list[int], per_subject: int, size: int, world_seed: int):
    """(catalog rows for build_from_rows, {subject id: set of its catalog contexts (variant 0)})."""
    from suti.world import plan_cluster, render_row

    rows, seen = [], {}
    for sid in subject_ids:
        page = plan_cluster(sid, per_subject, world_seed, noise=0.0)
        seen[sid] = {replace(r.context, variant=0) for r in page}
        for j, r in enumerate(page):
            rows.append({"image": render_row(r, size), "caption": r.caption, "id": f"s{sid:05d}-{j}", "url": r.url,
                         "cluster": sid, "subject_id": sid, "split": r.split})  # fmt: skip
    return rows, seen


def make_queries(subject_ids: list[int], seen: dict, per_subject: int, world_seed: int) -> list[dict]:
    """Per subject, `per_subject` captions of single-skill contexts absent from its catalog images.
    Subject i starts at skill i mod 5, so the first query of consecutive subjects cycles the skills."""
    from suti.world import SKILLS, caption, make_subject, skill_contexts

    out = []
    for i, sid in enumerate(subject_ids):
        subject = make_subject(sid, world_seed)
        rng = np.random.default_rng([world_seed, sid, _QUERY_STREAM])
        used = set(seen[sid])
        for q in range(per_subject):
            skill = SKILLS[(i + q) % len(SKILLS)]
            options = [c for c in skill_contexts(skill, subject) if c not in used]
            ctx = options[int(rng.integers(len(options)))]
            used.add(ctx)
            out.append({"subject_id": sid, "skill": skill, "context": ctx, "prompt": caption(subject, ctx, rng),
                        "coarse": (subject.shape, subject.color, subject.pattern)})  # fmt: skip
    return out


def retrieval_metrics(retriever, queries: list[dict], coarse_of: dict, split_of: dict, k: int) -> dict:
    prompts = [q["prompt"] for q in queries]
    t = time.perf_counter()
    entries = retriever.search(prompts, k=5, same_cluster=False)
    picked = retriever.search(prompts, k=k, same_cluster=True, choose_cluster="captions")
    by_vectors = retriever.search(prompts, k=k, same_cluster=True, choose_cluster="vectors")
    seconds = time.perf_counter() - t
    from retrieval.lexical import ClusterCaptions

    meta = retriever.metadata  # the same captions and cluster labels the retriever scores, BM25 instead
    caps, labels = meta["caption"].tolist(), meta[retriever.cluster_column].to_numpy()
    bm25 = ClusterCaptions(caps, labels, scoring="bm25").best(prompts)
    no_omission = ClusterCaptions(caps, labels, omit_weight=0.0).best(prompts)  # coverage before 2026-12-07
    top = [int(nb.clusters[0]) if len(nb) else -1 for nb in entries]  # cluster of the best entry
    hit1 = np.array([c == q["subject_id"] for c, q in zip(top, queries)])
    hit5 = np.array([q["subject_id"] in set(nb.clusters[:5].tolist()) for nb, q in zip(entries, queries)])
    cluster = np.array([nb.cluster == q["subject_id"] for nb, q in zip(picked, queries)])
    cluster_vec = np.array([nb.cluster == q["subject_id"] for nb, q in zip(by_vectors, queries)])
    cluster_bm25 = np.array([c == q["subject_id"] for c, q in zip(bm25, queries)])
    cluster_plain = np.array([c == q["subject_id"] for c, q in zip(no_omission, queries)])
    fell_back = sum(nb.chosen_by != "captions" for nb in picked)
    coarse1 = np.array([coarse_of.get(c) == q["coarse"] for c, q in zip(top, queries)])
    alike = np.array([sum(c == q["coarse"] for c in coarse_of.values()) for q in queries])  # subjects per caption
    twins = alike > 1

    def summary(mask: np.ndarray) -> dict:
        return {"queries": int(mask.sum()), "recall@1": float(hit1[mask].mean()),
                "recall@5": float(hit5[mask].mean()), "cluster_top1": float(cluster[mask].mean()),
                "cluster_top1_bm25": float(cluster_bm25[mask].mean()),
                "cluster_top1_without_omission": float(cluster_plain[mask].mean()),
                "cluster_top1_vectors": float(cluster_vec[mask].mean())}  # fmt: skip

    every = np.ones(len(queries), bool)
    by_split = {s: summary(np.array([split_of[q["subject_id"]] == s for q in queries]))
                for s in sorted(set(split_of.values()))}  # fmt: skip
    by_skill = {s: summary(np.array([q["skill"] == s for q in queries]))
                for s in dict.fromkeys(q["skill"] for q in queries)}  # fmt: skip
    no_twin = float(hit1[~twins].mean()) if (~twins).any() else None
    return {**summary(every), "coarse_match@1": float(coarse1.mean()), "queries_with_coarse_twin": int(twins.sum()),
            "recall@1_without_twin": no_twin, "chance@1": 1.0 / len(coarse_of),
            "cluster_top1_bound": float(np.mean(1.0 / alike)),
            "captions_fell_back_to_vectors": int(fell_back), "retrieval_k": k,
            "search_seconds": round(seconds, 3), "by_split": by_split, "by_skill": by_skill}  # fmt: skip


def reimagen(args, retriever, rows: list[dict], queries: list[dict], other) -> dict:
    import torch
    from diffusers import DDIMScheduler

    from suti.eval.graders import Graders
    from suti.pipeline.registry import load_pipeline
    from suti.world import make_subject, render

    t = time.perf_counter()
    pipe = load_pipeline(str(args.model))
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    graders = Graders.load()
    load_s = time.perf_counter() - t
    firsts = queries[:: args.queries_per_subject][: args.gen_subjects]  # each subject's first query
    sample = dict(num_inference_steps=args.steps, guidance_scale=args.guidance_scale,
                  subject_guidance_scale=args.subject_guidance_scale)  # fmt: skip
    alt = other.member_order  # the member order not under test
    names = ("reimagen", f"reimagen_{alt}", "oracle_demos", f"oracle_{alt}", "text_only", "ground_truth")
    items, images, subjects, prompts, demos = [], {s: [] for s in names}, [], [], []
    t = time.perf_counter()
    for q in firsts:
        sid, seed = q["subject_id"], args.seed
        own = [r for r in rows if r["cluster"] == sid]

        def gen(**kw):
            return pipe(q["prompt"], generator=torch.Generator().manual_seed(seed), **sample, **kw)

        out = gen(retriever=retriever, retrieval_k=args.retrieval_k)
        used = out.neighbors[0]
        images["reimagen"].append(out.images[0])
        oracle = own[: args.retrieval_k]
        images["oracle_demos"].append(gen(subject_images=[r["image"] for r in oracle],
                                          subject_captions=[r["caption"] for r in oracle]).images[0])  # fmt: skip
        out_alt = gen(retriever=other, retrieval_k=args.retrieval_k)
        images[f"reimagen_{alt}"].append(out_alt.images[0])
        ordered = other.cluster_members(sid, args.retrieval_k, member_order=alt, query=q["prompt"])
        images[f"oracle_{alt}"].append(gen(subject_images=ordered.images, subject_captions=ordered.captions).images[0])
        images["text_only"].append(gen().images[0])
        subject = make_subject(sid, args.world_seed)
        images["ground_truth"].append(render(subject, replace(q["context"], variant=seed % 4), 32))
        subjects.append(subject)
        prompts.append(q["prompt"])
        demos.append([r["image"] for r in own])
        items.append({"subject_id": sid, "skill": q["skill"], "prompt": q["prompt"], "seed": seed,
                      "retrieved_cluster": used.cluster, "retrieved_right_subject": used.cluster == sid,
                      "retrieved_ids": used.ids, "retrieved_captions": used.captions,
                      f"retrieved_ids_{alt}": out_alt.neighbors[0].ids, f"oracle_ids_{alt}": ordered.ids})  # fmt: skip
    gen_s = time.perf_counter() - t
    t = time.perf_counter()
    systems = {}
    for name, imgs in images.items():
        scored = graders.score(imgs, subjects, prompts, demos=demos)
        for item, s in zip(items, scored):
            item.setdefault("scores", {})[name] = {k: float(f"{s[k]:.4g}") for k in SCORES if s[k] is not None}
        systems[name] = {k: float(np.mean([s[k] for s in scored])) for k in SCORES if scored[0][k] is not None}
    if args.save_images:
        args.save_images.mkdir(parents=True, exist_ok=True)
        for name, imgs in images.items():
            for item, im in zip(items, imgs):
                im.save(args.save_images / f"s{item['subject_id']:05d}-{name}.png")
    trained = args.model / "training.json"
    step = json.loads(trained.read_text()).get("step") if trained.is_file() else None
    seconds = {"load": round(load_s, 1), "generate": round(gen_s, 1), "grade": round(time.perf_counter() - t, 1)}
    return {"subjects": len(items), "model": str(args.model), "model_step": step, "sampler": "ddim", **sample,
            "retrieval_k": args.retrieval_k, "member_order": retriever.member_order,
            "retrieved_right_subject": sum(i["retrieved_right_subject"] for i in items),
            "means": systems, "items": items, "seconds": seconds}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/catalog_world.json"))
    parser.add_argument("--subjects", type=_count(2, 2000), default=60, help="held-out subjects in the catalog")
    parser.add_argument("--per-subject", type=_count(1, 64), default=8, help="catalog images per subject")
    parser.add_argument("--queries-per-subject", type=_count(1, 5), default=5, help="one skill each")
    parser.add_argument("--size", type=_count(16, 512), default=32, help="catalog render size (px)")
    parser.add_argument("--world-seed", type=_count(0, 2**31), default=0)
    parser.add_argument("--retrieval-k", type=_count(1, 8), default=4, help="demos per prompt (Re-Imagen k)")
    parser.add_argument("--gen-subjects", type=_count(0, 200), default=4, help="Re-Imagen subjects (0 = skip)")
    parser.add_argument("--model", type=Path, default=Path("models/world"), help="SuTIPipeline dir")
    parser.add_argument("--steps", type=_count(1, 1000), default=25)
    parser.add_argument("--guidance-scale", type=float, default=2.0)
    parser.add_argument("--subject-guidance-scale", type=float, default=2.0)
    parser.add_argument("--seed", type=_count(0, 2**31), default=0, help="sampling seed")
    parser.add_argument("--threads", type=_count(1, 64), default=1, help="torch threads")
    parser.add_argument("--member-order", choices=("query", "central"), default="query",
                        help="which members of the chosen cluster are the demos (the other is measured too)")
    parser.add_argument("--save-images", type=Path, default=None, help="write the graded images here")
    args = parser.parse_args(argv)
    if args.gen_subjects > args.subjects:
        parser.error(f"--gen-subjects ({args.gen_subjects}) cannot exceed --subjects ({args.subjects})")
    if args.gen_subjects and not (args.model / "model_index.json").is_file():
        parser.error(f"--model {args.model} is not a saved SuTIPipeline directory (no model_index.json)")
    for name in ("guidance_scale", "subject_guidance_scale"):
        if not 0 <= getattr(args, name) < 100:
            parser.error(f"--{name.replace('_', '-')} must be in [0, 100), got {getattr(args, name)}")
    import torch

    from retrieval import build_from_rows, load_embedder, open_retriever
    from suti.eval.benchmark import benchmark_subject_ids
    from suti.eval.clip_world import world_clip_spec
    from suti.world import coarse_traits, split_of

    torch.set_num_threads(args.threads)
    start, load0 = time.perf_counter(), os.getloadavg()[0]
    ids = benchmark_subject_ids(args.subjects, args.world_seed)
    t = time.perf_counter()
    rows, seen = build_catalog(ids, args.per_subject, args.size, args.world_seed)
    queries = make_queries(ids, seen, args.queries_per_subject, args.world_seed)
    render_s = time.perf_counter() - t
    embedder = load_embedder(world_clip_spec())
    coarse = {sid: coarse_traits(sid, args.world_seed) for sid in ids}
    splits = {sid: split_of(sid, args.world_seed) for sid in ids}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        built = build_from_rows(rows, Path(tmp) / "index", embedder, progress=False)
        build_s = time.perf_counter() - t
        retriever = open_retriever(Path(tmp) / "index", embedder=embedder, image_source=rows,
                                   member_order=args.member_order)  # fmt: skip
        other = copy.copy(retriever)  # the same loaded index, the other member order by default
        other.member_order = "central" if args.member_order == "query" else "query"
        report = {
            "catalog": {"subjects": len(ids), "entries": len(rows), "per_subject": args.per_subject,
                        "size_px": args.size, "world_seed": args.world_seed, "noise": 0.0,
                        "splits": {s: sum(v == s for v in splits.values()) for s in sorted(set(splits.values()))},
                        "index": {"key": built.index.index_key, "n_vectors": built.index.n_vectors,
                                  "dim": built.index.dim,
                                  "caption_recall@10": built.index.evaluation.get("recall_at_k")},
                        "embed_images_per_second": round(built.embed.images_per_second, 1),
                        "seconds": {"render": round(render_s, 1), "embed_and_index": round(build_s, 1)}},
            "retrieval": retrieval_metrics(retriever, queries, coarse, splits, args.retrieval_k),
        }  # fmt: skip
        report["reimagen"] = reimagen(args, retriever, rows, queries, other) if args.gen_subjects else None
    report["run"] = {"torch_threads": torch.get_num_threads(), "seconds": round(time.perf_counter() - start, 1),
                     "loadavg_start": load0, "loadavg_end": os.getloadavg()[0],
                     "argv": list(sys.argv[1:] if argv is None else argv),
                     "embedder": "world CLIP (suti/eval/weights)",
                     "note": "wall-clock timings; loadavg_start / loadavg_end show other load on the machine"}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    brief = {k: v for k, v in report.items() if k != "reimagen"}
    brief["reimagen_means"] = (report["reimagen"] or {}).get("means")
    print(json.dumps(brief, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
