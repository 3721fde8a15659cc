"""Write conf/{model,metadata,data}/NAME.yaml, point conf/config.yaml's defaults at them, and
recompose params.yaml the way `make params` (and `dvc exp run`) does."""
from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import yaml

from ml_atlas_sdk.errors import AtlasInputError
from ml_atlas_sdk.pipeline.params import compose_params
from ml_atlas_sdk.reports import write_text_atomic
from ml_atlas_sdk.settings import Settings

GROUPS = ("model", "metadata", "data")
CONFIG = Path("conf") / "config.yaml"
_NAME = re.compile(r"[A-Za-z0-9_-]+")


def conf_paths(root: Path, name: str) -> dict[str, Path]:
    if not _NAME.fullmatch(name):
        raise AtlasInputError(f"NAME {name!r}: use letters, digits, '_' and '-' (it names conf/<group>/NAME.yaml "
                              "and the Hydra option)")
    if not (root / CONFIG).is_file():
        raise AtlasInputError(f"{root / CONFIG} does not exist: run atlas-bundle init in the project's root folder")
    return {group: root / "conf" / group / f"{name}.yaml" for group in GROUPS}


def refuse_existing(paths: dict[str, Path], root: Path) -> None:
    existing = [str(p.relative_to(root)) for p in paths.values() if p.exists()]
    if existing:
        raise AtlasInputError(f"{', '.join(existing)} already exist: pass --force to overwrite, or pick another NAME")


def write_conf(paths: dict[str, Path], sections: dict[str, dict[str, Any]], headers: dict[str, list[str]]) -> None:
    """One YAML file per group, in the demo files' layout (flow style for shapes and axes), each
    under its header's comment lines."""
    for group, path in paths.items():
        comment = "".join(f"# {line}".rstrip() + "\n" for line in headers.get(group, []))
        write_text_atomic(path, comment + "".join(_item(key, value) for key, value in sections[group].items()))


def _item(key: str, value: Any) -> str:
    # Block style at the top, flow style for leaf collections (`tokens: [-1, -1]`), as in demo.yaml;
    # a section of scalars alone would otherwise come out as one flow mapping.
    flow = None if isinstance(value, (dict, list)) else False
    return yaml.safe_dump({key: value}, sort_keys=False, default_flow_style=flow, width=120)


def switched_config(root: Path, name: str) -> str:
    """conf/config.yaml with its three `- group: option` defaults lines pointing at NAME (comments
    stay); computed before anything is written, so a config init cannot edit refuses cleanly."""
    text = (root / CONFIG).read_text()
    for group in GROUPS:
        line = re.compile(rf"^(\s*-\s*{group}\s*:\s*)[^\s#]+", re.MULTILINE)
        if len(line.findall(text)) != 1:
            raise AtlasInputError(f"{CONFIG}: no single '- {group}: ...' line in its defaults list to point at {name!r}; "
                                  "edit it by hand, or pass --no-switch and use the override")
        text = line.sub(lambda m: m.group(1) + name, text)
    return text


def write_config(root: Path, text: str) -> None:
    write_text_atomic(root / CONFIG, text)


def overrides(name: str) -> list[str]:
    return [f"{group}={name}" for group in GROUPS]


def recompose(root: Path, name: str, switched: bool) -> Settings:
    """params.yaml recomposed from conf/ (when the defaults were switched), and the composition with
    NAME validated against the one settings schema either way."""
    if switched:
        return _validated(compose_params(root, root / "params.yaml"))
    with tempfile.TemporaryDirectory() as tmp:
        return _validated(compose_params(root, Path(tmp) / "params.yaml", overrides(name)))


def _validated(params: Path) -> Settings:
    return Settings.from_config(yaml.safe_load(params.read_text()))
