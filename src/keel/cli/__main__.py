"""``python -m keel.cli``: the same as the ``keel`` script."""

from keel.cli.main import main

main()
