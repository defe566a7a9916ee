"""``python -m b24bridge.cli``: the same as the ``b24bridge`` command."""

from b24bridge.cli import main

main()
