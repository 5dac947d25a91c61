"""``python -m asterai.cli``: the same command line as the ``asterai`` script."""

from asterai.cli import main

main()
