"""A tiny real open_clip model for tests: registered from a JSON config, seeded random local checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

# A ViT with width 64 and 2 layers on 32 px images; the text tower uses open_clip's default BPE
# tokenizer, whose vocabulary file ships inside the open_clip package (no hub download).
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def make_tiny_clip(folder: Path, name: str = "retrieval-test-tiny-clip"):
    """Register a tiny config from `folder`, save a seeded random checkpoint there, return its ClipSpec."""
    import open_clip
    import torch

    from retrieval import ClipSpec

    folder.mkdir(parents=True, exist_ok=True)
    config = folder / f"{name}.json"
    config.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    checkpoint = folder / "tiny_clip.pt"
    torch.save(open_clip.create_model(name).state_dict(), checkpoint)
    return ClipSpec(name, checkpoint=str(checkpoint), config=str(config))
