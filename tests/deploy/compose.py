"""Reading docker-compose.yml the way Compose does: variables, anchors, depends_on order."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"

# Compose's interpolation: $$ is a literal $, ${NAME}, ${NAME:-default}, ${NAME:?error}.
_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:[-?])([^}]*))?\}")


class MissingVariable(KeyError):
    """A ${NAME:?…} variable is unset, as Compose refuses it."""


def interpolate(value, env: Mapping[str, str]):
    """``value`` (a string, list or mapping from the Compose file) with variables filled in."""
    if isinstance(value, str):

        def fill(match: re.Match) -> str:
            if match.group(0) == "$$":
                return "$"
            name, kind, arg = match.groups()
            if env.get(name):
                return env[name]
            if kind == ":?":
                raise MissingVariable(f"{name}: {arg}")
            return arg if kind == ":-" else ""

        return _VARIABLE.sub(fill, value)
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    return value


def load(env: Mapping[str, str], path: Path = COMPOSE_FILE) -> dict:
    """The Compose file with anchors merged and variables filled in."""
    return interpolate(yaml.safe_load(path.read_text()), env)


def depends_on(service: dict) -> dict[str, str]:
    """``service``'s dependencies and the condition each must reach first."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def start_order(services: dict[str, dict]) -> list[str]:
    """Services in an order where each comes after everything it depends on."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise ValueError(f"depends_on cycle through {name}")
        visiting.add(name)
        for dep in depends_on(services[name]):
            visit(dep)
        visiting.discard(name)
        order.append(name)

    for name in services:
        visit(name)
    return order


def healthcheck_argv(service: dict) -> list[str] | None:
    """The service's health check as a command line, as Docker runs it."""
    test = (service.get("healthcheck") or {}).get("test")
    if not test:
        return None
    if isinstance(test, str):
        return ["sh", "-c", test]
    if test[0] == "CMD-SHELL":
        return ["sh", "-c", test[1]]
    if test[0] == "CMD":
        return list(test[1:])
    raise ValueError(f"unknown healthcheck form {test[0]!r}")
