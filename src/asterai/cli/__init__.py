"""``asterai <command>``: a thin command line over the library.

One module per command family; each lists its commands in ``COMMANDS``, and
``FAMILIES`` below registers them. A new family is one module here plus its
entry in ``FAMILIES``. What every step shares (the common options, settings,
exit status) lives in :mod:`asterai.cli.common`.

Exit status: 0 on success, 1 when the step ran but failed (bad data, an
unreachable exchange, a failed series), 2 for wrong usage. The last lines on
stderr say why.
"""

from __future__ import annotations

import sys

import click

from asterai import __version__
from asterai.cli import (
    backtest,
    data,
    deploy,
    live,
    models,
    optimize,
    paper,
    pipeline,
    replay,
    watch,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="asterai")
def main() -> None:
    """AsterAI: real Aster DEX perpetual-futures data in, confluence models and an honest backtest out.

    Every step reads and writes artifacts under a data root (--data-root, default the
    current folder) and talks to the real exchange unless --base-url points elsewhere,
    for example at `asterai replay` serving a recorded folder offline.
    """


FAMILIES = (data, models, backtest, optimize, deploy, paper, live, watch, pipeline, replay)

for _family in FAMILIES:
    for _command in _family.COMMANDS:
        main.add_command(_command)


def run_script(command: str, prog_name: str, fixed: tuple[str, ...] = ()) -> None:
    """The seed guide's script names (``scripts/*.py``, ``local_training/*.py``): one
    subcommand under the script's own name, with every option of the command."""
    cmd = main.commands[command]
    cmd.main(
        [*fixed, *sys.argv[1:]],
        prog_name=prog_name,
        help_option_names=["-h", "--help"],
        max_content_width=100,
    )
