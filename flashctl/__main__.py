"""`python -m flashctl`."""

from flashctl.cli import main

main()
