"""YAML configs as argparse defaults: ``--config FILE`` sets defaults, flags given on the command line win."""
import argparse
import os
from typing import List, Optional, Sequence

import yaml

__all__ = ["HelpFormatter", "ConfigError", "parse_with_config", "check_ranges"]


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


def _typed(action: argparse.Action, value):
    """``value`` from YAML as the flag would parse it; ValueError (completing "KEY: VALUE ...") when it cannot.

    argparse converts only strings, so without this ``lr: fast`` or ``crop_size: 12.5`` reached the run as is.
    """
    if value is None or (isinstance(value, bool) and action.nargs in (0, "?")):  # switches, --flag [VALUE]
        return value
    if action.nargs == 0:
        raise ValueError("is not true or false")
    many = action.nargs in ("+", "*") or isinstance(action.nargs, int)
    if isinstance(value, dict) or (isinstance(value, list) and not many):
        raise ValueError("must be a single value")
    convert = action.type or str
    items = value if isinstance(value, list) else [value]
    if any(isinstance(item, (list, dict)) or (isinstance(item, bool) and convert is not str) for item in items):
        raise ValueError(f"is not a valid {getattr(convert, '__name__', 'value')}")
    try:
        typed = [convert(str(item)) for item in items]
    except (TypeError, ValueError, argparse.ArgumentTypeError):
        raise ValueError(f"is not a valid {getattr(convert, '__name__', 'value')}") from None
    return typed if many else typed[0]


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
        actions = {}
        for action in parser._actions:  # --x before --no-x: the first action of a dest says its type
            actions.setdefault(action.dest, action)
        unknown = sorted(k for k in values if k not in actions or k in ("help", "config"))
        if unknown:
            parser.error(f"config file {known.config}: unknown options {unknown}")
        for key, value in values.items():
            try:
                values[key] = _typed(actions[key], value)
            except ValueError as exc:
                parser.error(f"config file {known.config}: {key}: {value!r} {exc}")
            choices = actions[key].choices
            items = values[key] if isinstance(values[key], list) else [values[key]]
            if choices is not None and any(item not in choices for item in items):
                parser.error(f"config file {known.config}: {key}={value!r} is not one of {list(choices)}")
        parser.set_defaults(**values)
    return parser.parse_args(argv)


def check_ranges(opts: argparse.Namespace, positive: Sequence[str], non_negative: Sequence[str] = ()) -> None:
    """ConfigError naming the first option in ``positive`` that is not above 0 (NaN included), or in
    ``non_negative`` that is below 0; None (chosen automatically later) passes. Scripts call it before any work."""
    for names, fits, wanted in ((positive, lambda v: v > 0, "positive"), (non_negative, lambda v: v >= 0, "0 or more")):
        for name in names:
            value = getattr(opts, name)
            if value is not None and not fits(value):
                raise ConfigError(f"--{name} must be {wanted}, not {value}")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows every option's default: argparse's "(default: X)", unless the help text already says what
    the default is (an option whose default is worked out at run time, such as the checkpoint's model)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.required:
            return text
        if action.default is None:
            return f"{text} (default: none)"
        return super()._get_help_string(action)
