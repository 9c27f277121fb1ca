"""--help of both scripts: every option has a line of help and shows its default."""
import argparse
import os

import pytest

import main as train_script
import predict as predict_script
from tests.conftest import ROOT
from utils.config import HelpFormatter


@pytest.mark.parametrize("script", [train_script, predict_script])
def test_every_option_has_help_and_shows_its_default(script):
    parser = script.get_argparser()
    formatter = HelpFormatter(prog="x")
    options = [action for action in parser._actions if not isinstance(action, argparse._HelpAction)]
    assert options
    for action in options:
        assert action.help and action.help.strip(), f"{action.option_strings} has no help"
        shown = formatter._get_help_string(action)
        assert action.required or "default" in shown, f"{action.option_strings}: {shown}"
    text = parser.format_help()
    assert "(default: None)" not in text


def test_the_output_folder_is_named_in_help_and_ignored_by_git():
    assert "(default: predictions)" in " ".join(predict_script.get_argparser().format_help().split())
    with open(os.path.join(ROOT, ".gitignore")) as f:
        assert "/predictions/" in f.read().split()
