"""`python -m leeward.cli`: the same as the `leeward` console script (how `leeward up` starts
the embedded fleet with the interpreter it runs on)."""

from leeward.cli.entry import main

main()
