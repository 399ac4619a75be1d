"""What several commands share: argument types, dataset arguments, one-line errors."""

from __future__ import annotations

import argparse
import math
from typing import NoReturn

from ufinebench.data.annotations import FORMATS
from ufinebench.errors import UFineBenchError

EXIT_USAGE = 2


def one_line(message: str, limit: int = 600) -> str:
    """An error message as one line of at most ``limit`` characters (inputs quoted in it can be long)."""
    text = " ".join(message.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (the full usage is one --help away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def add_dataset_args(p: argparse.ArgumentParser) -> None:
    """DATASET and --format, as every command that reads one annotation file takes them."""
    p.add_argument("dataset", metavar="DATASET", help="annotation file, or the dataset folder that holds it")
    p.add_argument("--format", choices=list(FORMATS), help="dataset format when it cannot be inferred from the file name or fields")


def parse_pair(text: str, sep: str, what: str) -> tuple[int, int]:
    """Two integers written as N{sep}M ("384x128", "2:5"), else a one-line error naming the option."""
    try:
        a, b = (int(x) for x in text.lower().split(sep))
    except ValueError:
        raise UFineBenchError(f"{what} must look like N{sep}M, got {text!r}") from None
    return a, b


def nonnegative(value: str, flag: str, also: str = "") -> float:
    """A finite number >= 0 from a command-line value, else a one-line error naming the flag."""
    try:
        x = float(value)
    except ValueError:
        raise UFineBenchError(f"{flag}: a number{also}, got {value!r}") from None
    if not math.isfinite(x) or x < 0:
        raise UFineBenchError(f"{flag}: must be a finite number >= 0, got {value!r}")
    return x


def positive(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text[:40]!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def port(text: str) -> int:
    """argparse type: a TCP port."""
    value = positive(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is at most 65535, got {value}")
    return value
