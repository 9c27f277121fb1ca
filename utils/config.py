"""YAML configs as argparse defaults: ``--config FILE`` sets defaults, flags given on the command line win."""
import argparse
import os
from typing import List, Optional

import yaml

__all__ = ["ConfigError", "parse_with_config"]


class ConfigError(ValueError):
    """A config file that is missing, malformed or names unknown options."""


def _load(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path} does not exist")
    try:
        with open(path) as f:
            values = yaml.safe_load(f) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping of option: value")
    return values


def parse_with_config(parser: argparse.ArgumentParser, argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse ``argv`` with ``--config`` values as defaults; unknown keys or invalid choices exit with an error."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    if known.config:
        try:
            values = _load(known.config)
        except ConfigError as exc:
            parser.error(str(exc))
        actions = {a.dest: a for a in parser._actions}
        unknown = sorted(k for k in values if k not in actions or k in ("help", "config"))
        if unknown:
            parser.error(f"config file {known.config}: unknown options {unknown}")
        for key, value in values.items():
            action = actions[key]
            if action.choices is not None and value not in action.choices:
                parser.error(f"config file {known.config}: {key}={value!r} is not one of {list(action.choices)}")
        parser.set_defaults(**values)
    return parser.parse_args(argv)
