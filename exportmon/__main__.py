"""``python -m exportmon``."""

from exportmon.commands import main

main()
