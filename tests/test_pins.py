"""The conda environments under envs/ pin what pyproject.toml pins."""

import re
import tomllib

import yaml
from conftest import ROOT


def requirement_name(spec: str) -> str:
    return re.split(r"[<>=!~ \[]", spec, maxsplit=1)[0].lower()


def test_every_environment_pins_like_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {requirement_name(s): s.replace(" ", "") for s in project["dependencies"]}
    envs = sorted((ROOT / "envs").glob("*.yaml"))
    assert envs
    for env in envs:
        spec = yaml.safe_load(env.read_text())
        pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
        for line in pip:
            if line.startswith("-e") or line.startswith("."):
                continue
            name = requirement_name(line)
            assert name in pins, f"{env.name}: {name} is not a dependency in pyproject.toml"
            assert line.replace(" ", "") == pins[name], f"{env.name}: {line} != {pins[name]}"
