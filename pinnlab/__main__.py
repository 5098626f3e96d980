"""``python -m pinnlab`` (and ``torchrun ... -m pinnlab``): the ``pinnlab`` command line.

It runs the main of the imported :mod:`pinnlab.cli`, whose ``UsageError`` is the class
the subcommand modules raise (bad input: one line, exit code 2)."""

import sys

from pinnlab.cli import main

if __name__ == "__main__":
    sys.exit(main())
