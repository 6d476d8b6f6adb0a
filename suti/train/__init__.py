"""Training: one loop (accelerate, EMA, checkpoints, validation) and three recipes (base, dreambooth, apprentice).

    from suti.train import load_recipe, train
    train(load_recipe("apprentice_tiny"), "runs/a0")
"""

from suti.train.recipe import TrainRecipe, load_recipe, recipe_names

__all__ = ["TrainRecipe", "load_recipe", "recipe_names", "train"]


def train(*args, **kwargs):
    """See `suti.train.loop.train` (imported lazily: it pulls in torch and accelerate)."""
    from suti.train.loop import train as _train

    return _train(*args, **kwargs)
