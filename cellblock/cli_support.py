"""What every `cellblock` command shares: exit codes and how an error ends a command.

Exit codes: 0 accepted / all good; 1 the program (or a language's self-test) was not accepted; 2 the request
was wrong (bad input); 3 the sandbox or Cellblock itself failed (nothing was judged).
"""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from cellblock.errors import CellblockError, UserError

EXIT_NOT_ACCEPTED, EXIT_USER_ERROR, EXIT_INTERNAL = 1, 2, 3


def fail(error: CellblockError) -> NoReturn:
    """One line on stderr naming the field at fault, then the exit code of the error's family."""
    field = f" [{error.field}]" if error.field else ""
    click.echo(f"error{field}: {error.message}", err=True)
    sys.exit(EXIT_USER_ERROR if isinstance(error, UserError) else EXIT_INTERNAL)
