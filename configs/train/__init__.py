"""Training recipes (JSON) for `suti train`; see suti/train/recipe.py."""
