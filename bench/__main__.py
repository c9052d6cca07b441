"""``python -m bench``: the one command that measures every row and prints the table."""

from bench.edge import main

main()
