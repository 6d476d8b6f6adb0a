"""Re-Imagen mode: demonstrations come from a neighbour index instead of the user's photos.

    pipe("a teapot in the jungle", retriever=open_retriever("out/index"), retrieval_k=4)

For each prompt the retriever returns the k best members of ONE cluster (one subject); their images
and captions become that prompt's demos. What was used is recorded, so every output can say which
catalog entries it was conditioned on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from suti.errors import InputError
from suti.models.config import MAX_DEMOS


@dataclass
class UsedNeighbors:
    """The catalog entries one prompt was conditioned on (JSON-friendly)."""

    prompt: str
    cluster: int | None
    ids: list[str]
    scores: list[float]
    captions: list[str]
    urls: list[str]
    chosen_by: str | None = None  # how the retriever chose the cluster ("captions", "vectors")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def retrieve_demos(retriever: Any, prompts: list[str], k: int) -> tuple[list[list[Any]], list[list[str]],
                                                                          list[UsedNeighbors]]:
    """(one demo-image list per prompt, one caption list per prompt, what was used) from `retriever`."""
    if not hasattr(retriever, "search"):
        raise InputError(f"retriever must have a .search(text, k, same_cluster=True) method "
                         f"(e.g. retrieval.NeighborRetriever), got {type(retriever).__name__}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_DEMOS:
        raise InputError(f"retrieval_k must be an integer in [1, {MAX_DEMOS}], got {k!r}")
    found = retriever.search(list(prompts), k=k, same_cluster=True)  # one Neighbors per prompt
    sets, caps, used = [], [], []
    for i, (prompt, nb) in enumerate(zip(prompts, found)):
        if len(nb) == 0:
            raise InputError(f"prompt[{i}]: the retriever found no neighbours in any cluster for {prompt!r}")
        sets.append(list(nb.images))
        caps.append(list(nb.captions))
        used.append(UsedNeighbors(prompt, None if nb.cluster is None else int(nb.cluster), list(nb.ids),
                                  [float(s) for s in nb.scores], list(nb.captions), list(nb.urls),
                                  getattr(nb, "chosen_by", None)))  # fmt: skip
    return sets, caps, used
