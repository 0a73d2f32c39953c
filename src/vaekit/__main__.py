"""`python -m vaekit`: the command line."""

from vaekit.cli import main

main()
