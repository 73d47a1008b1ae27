"""`python -m recursive_reasoning` runs the `rr` command line."""

from recursive_reasoning.cli import main

main()
