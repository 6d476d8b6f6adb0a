"""Named model presets (`tiny`, `world`, `sd15`) as JSON files in this package.

    from configs import load_preset
    cfg = load_preset("world")            # or a path to any SuTIConfig JSON file
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from suti.models.config import SuTIConfig

PRESETS = ("tiny", "world", "sd15")


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files(__name__).iterdir() if p.name.endswith(".json"))


def load_preset(name_or_path: str | Path) -> "SuTIConfig":
    """A preset by name, or a SuTIConfig JSON file by path; ConfigError names what was not found."""
    from suti.errors import ConfigError
    from suti.models.config import SuTIConfig

    name = str(name_or_path)
    if name in preset_names():
        return SuTIConfig.from_json(resources.files(__name__).joinpath(f"{name}.json").read_text())
    path = Path(name)
    if path.suffix == ".json" and path.is_file():
        return SuTIConfig.from_json(path.read_text())
    raise ConfigError(f"preset: {name!r} is neither a preset name ({', '.join(preset_names())}) nor a JSON file")
