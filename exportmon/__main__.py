"""``python -m exportmon``."""

from exportmon.commands.app import main

main()
