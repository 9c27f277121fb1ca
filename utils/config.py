"""YAML configs as argparse defaults: ``--config FILE`` sets defaults, flags given on the command line win."""
import argparse
import math
import os
import sys
from typing import Callable, FrozenSet, List, Optional, Sequence, Tuple

import yaml

__all__ = ["HelpFormatter", "ConfigError", "decode_utf8", "read_utf8", "read_yaml_file", "Options", "parse_with_config",
           "given", "given_on_command_line", "check_ranges", "Conflict", "refuse_conflicts", "Unused", "warn_unused"]


class ConfigError(ValueError):
    """A config file that is missing, malformed or names unknown options."""


def decode_utf8(data: bytes) -> str:
    """``data`` as UTF-8 text, a byte-order mark (as Windows editors write) dropped; a ValueError that completes
    "FILE ...", saying where, when it is not UTF-8."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"is not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start})") from None


def read_utf8(path: str, what: str, error: type = ValueError) -> str:
    """The text of ``path`` as UTF-8 whatever the system's locale (the files this project writes are UTF-8);
    ``error`` naming the ``what`` and file when it cannot be read or is not UTF-8."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise error(f"{what} {path} cannot be read ({exc.strerror})") from None
    try:
        return decode_utf8(data)
    except ValueError as exc:
        raise error(f"{what} {path} {exc}; save it as UTF-8") from None


def read_yaml_file(path: str, name: str, shape: str, error: type = ValueError, expected: type = dict,
                   if_missing: str = ""):
    """The value that YAML file ``path`` holds, read as UTF-8 (an empty file is an empty mapping); ``error`` with one
    line that names it as ``name`` when it is missing (followed by ``if_missing``, what to do), unreadable, not UTF-8,
    not YAML, or not an ``expected`` (``shape`` says what it must hold)."""
    if not os.path.isfile(path):
        raise error(f"{name} {path} {'is a folder, not a file' if os.path.isdir(path) else 'does not exist'}"
                    f"{if_missing}")
    text = read_utf8(path, name, error)
    try:
        value = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError) as exc:  # PyYAML's message spans lines; a bad date is a ValueError
        raise error(f"{name} {path} is not valid YAML ({' '.join(str(exc).split())}); it must hold {shape}") from None
    value = {} if value is None and expected is dict else value
    if not isinstance(value, expected):
        raise error(f"{name} {path} must hold {shape}")
    return value


def _load(path: str) -> dict:
    return read_yaml_file(path, "config file", "a mapping of option: value", ConfigError)


def _yaml_bool(text: str) -> Optional[bool]:
    """The boolean YAML reads ``text`` as (``off`` -> False), None when it reads another value."""
    value = yaml.safe_load(text)
    return value if isinstance(value, bool) else None


def _typed(action: argparse.Action, value):
    """``value`` from YAML as the flag would parse it; ValueError (completing "KEY: VALUE ...") when it cannot.

    argparse converts only strings, so without this ``lr: fast`` or ``crop_size: 12.5`` reached the run as is.
    YAML reads ``off``, ``no`` and ``false`` as False: a choice spelled so (``amp: off``) is that choice.
    """
    if value is None:  # `key:` or `key: null`: an option unset by default, or one whose `none` is a number
        if action.default is None:
            return value
        try:
            none = action.type("none")  # --max_image_pixels none: 0, no limit
        except (TypeError, ValueError, argparse.ArgumentTypeError):  # no type, or one that takes no `none`
            none = None
        if isinstance(none, str) or none is None:
            raise ValueError(f"has no value; give one or leave the line out (default: {action.default})")
        return none
    if isinstance(value, bool) and action.nargs in (0, "?"):  # switches, --flag [VALUE]
        return value
    spelled = [choice for choice in action.choices or () if isinstance(choice, str) and _yaml_bool(choice) is value]
    if isinstance(value, bool) and len(spelled) == 1:
        value = spelled[0]
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


class Options(argparse.Namespace):
    """Parsed options that also know which of them the user gave: on the command line, or in the --config file.

    The two sets live in slots, outside ``vars(opts)``, so that tables and records of the options leave them out;
    read them with :func:`given` and :func:`given_on_command_line`.
    """

    __slots__ = ("_command_line", "_config_file")


def given(opts: argparse.Namespace, name: str) -> bool:
    """Whether option ``name`` (its dest) was given on the command line or in the --config file (False for a
    namespace that :func:`parse_with_config` did not make)."""
    return name in getattr(opts, "_command_line", ()) or name in getattr(opts, "_config_file", ())


def given_on_command_line(opts: argparse.Namespace, name: str) -> bool:
    return name in getattr(opts, "_command_line", ())


def _command_line_options(parser: argparse.ArgumentParser, argv: Optional[List[str]]) -> FrozenSet[str]:
    """The dests that ``argv`` itself sets: it is parsed again with every default suppressed (the --config file's
    too), so that only what the command line holds lands in the namespace. Call it once ``argv`` parsed."""
    saved = [(action, action.default) for action in parser._actions]
    saved_defaults = parser._defaults
    try:
        for action, _ in saved:
            action.default = argparse.SUPPRESS
        parser._defaults = {}
        namespace, _ = parser.parse_known_args(argv)
    finally:
        for action, default in saved:
            action.default = default
        parser._defaults = saved_defaults
    return frozenset(vars(namespace))


def _config_values(parser: argparse.ArgumentParser, path: str) -> dict:
    """The typed option values of config file ``path``; unknown keys, bad values and invalid choices exit with
    the parser's error."""
    try:
        values = _load(path)
    except ConfigError as exc:
        parser.error(str(exc))
    actions = {}
    for action in parser._actions:  # --x before --no-x: the first action of a dest says its type
        actions.setdefault(action.dest, action)
    unknown = sorted(k for k in values if k not in actions or k in ("help", "config"))
    if unknown:
        parser.error(f"config file {path}: unknown options {unknown}")
    for key, value in values.items():
        try:
            values[key] = _typed(actions[key], value)
        except ValueError as exc:
            parser.error(f"config file {path}: {key}: {'null' if value is None else repr(value)} {exc}")
        choices = actions[key].choices
        items = values[key] if isinstance(values[key], list) else [values[key]]
        if choices is not None and any(item not in choices for item in items):
            parser.error(f"config file {path}: {key}={value!r} is not one of {list(choices)}")
    return values


def parse_with_config(parser: argparse.ArgumentParser, argv: Optional[List[str]] = None) -> Options:
    """Parse ``argv`` with the ``--config`` file's values (for parsers that have the option) as defaults; unknown
    keys or invalid choices exit with an error. The result knows which options were given (:class:`Options`)."""
    values = {}
    if any(action.dest == "config" for action in parser._actions):
        pre = argparse.ArgumentParser(add_help=False)
        pre.add_argument("--config")
        known, _ = pre.parse_known_args(argv)
        values = _config_values(parser, known.config) if known.config else {}
    parser.set_defaults(**values)
    opts = parser.parse_args(argv, namespace=Options())
    opts._command_line, opts._config_file = _command_line_options(parser, argv), frozenset(values)
    return opts


def check_ranges(opts: argparse.Namespace, positive: Sequence[str], non_negative: Sequence[str] = (),
                 fractions: Sequence[str] = ()) -> None:
    """ConfigError naming the first option in ``positive`` that is not above 0 (NaN included), in ``non_negative``
    that is below 0, or in ``fractions`` that is outside 0..1, or that is infinite; None (chosen automatically
    later) passes. Scripts call it before any work."""
    for names, fits, wanted in ((positive, lambda v: v > 0, "positive"), (non_negative, lambda v: v >= 0, "0 or more"),
                                (fractions, lambda v: 0 <= v <= 1, "between 0 and 1")):
        for name in names:
            value = getattr(opts, name)
            if value is not None and math.isinf(value):  # --lr .inf passed as positive, and trained a NaN
                raise ConfigError(f"--{name} must be a finite number, not {value}")
            if value is not None and not fits(value):
                raise ConfigError(f"--{name} must be {wanted}, not {value}")


Conflict = Tuple[bool, str]
"""(whether the options at hand contradict each other, the one-line message that says what to change)."""


def refuse_conflicts(conflicts: Sequence[Conflict]) -> None:
    """ConfigError with the message of the first conflict that holds: options that cannot be honoured together,
    refused before any work (a value out of range is :func:`check_ranges`'s)."""
    for holds, message in conflicts:
        if holds:
            raise ConfigError(message)


Unused = Tuple[Sequence[str], bool, str]
"""(option names, whether this run leaves them unused, why: the end of "--x is not used: ...")."""


def _warn(line: str) -> None:
    print(line, file=sys.stderr)


def warn_unused(opts: argparse.Namespace, rules: Sequence[Unused], log: Callable[[str], None] = _warn) -> None:
    """One warning line for each rule that holds and names options given on the command line, e.g.
    ``warning: --tta_scales is not used: --tta is off``.

    Values from a --config file are never warned about: a config holds a whole recipe, which also serves runs
    that use part of it (--test_only with the training config). Call it once per run, before any work.
    """
    for names, unused, why in rules:
        named = [f"--{name}" for name in names if unused and given_on_command_line(opts, name)]
        if named:
            log(f"warning: {', '.join(named)} {'is' if len(named) == 1 else 'are'} not used: {why}")


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
