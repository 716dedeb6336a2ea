"""`python -m cellblock` is the `cellblock` command."""

from cellblock.cli import main

main()
