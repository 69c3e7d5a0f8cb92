"""`python -m lifecycle` runs the command line."""

from lifecycle.cli.main import main

main()
