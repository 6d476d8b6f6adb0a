"""The `suti` command line (`tools/cli.py`) and benchmarks (`tools/bench/`)."""


def quiet_library_bars() -> None:
    """`--no-progress`: also hide the loading bars diffusers and transformers draw for every model read."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
