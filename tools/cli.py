"""The one `suti` command line. Sub-commands live in their own modules; this file only wires them.

Every module keeps heavy imports (torch, diffusers, datasets) inside its functions so that
`suti --help` stays fast.
"""

from __future__ import annotations

import sys

import typer

from suti import __version__
from suti.errors import SutiError

app = typer.Typer(
    name="suti",
    help="SuTI engine: render a subject from 3-5 reference photos in a new context, zero-shot.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"suti {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """SuTI engine command line."""


def _register() -> None:
    from tools import client as client_cmd
    from tools import demo as demo_cmd
    from tools import eval_auto as eval_auto_cmd
    from tools import eval_human as eval_human_cmd
    from tools import experts as experts_cmd
    from tools import generate as generate_cmd
    from tools import index as index_cmd
    from tools import serve as serve_cmd
    from tools import train as train_cmd
    from tools import world as world_cmd

    app.add_typer(world_cmd.app, name="world", help="Build and inspect the procedural subject world.")
    app.add_typer(index_cmd.app, name="index", help="Build and query the FAISS neighbour index.")
    eval_app = typer.Typer(no_args_is_help=True, help="Evaluate systems: automatic graders and human studies.")
    eval_app.registered_commands.extend(eval_auto_cmd.app.registered_commands)
    eval_app.add_typer(eval_human_cmd.app, name="human", help="Blinded multi-rater human studies: create, serve, report.")
    app.add_typer(eval_app, name="eval", help="Evaluate systems: automatic graders and human studies.")
    app.command("generate", help="Render a subject from reference photos (or a catalog index) in a new context.")(
        generate_cmd.generate)
    app.command("demo", help="Held-out subjects on the bundled model: a PNG grid and the scores.")(demo_cmd.demo)
    app.add_typer(train_cmd.app, name="train", help="Train: base, dreambooth, apprentice; export a run.")
    app.add_typer(experts_cmd.app, name="experts", help="Per-cluster DreamBooth experts: apprenticeship data.")
    app.command("serve", help="The personalization HTTP API (FastAPI + uvicorn).")(serve_cmd.serve)
    app.add_typer(client_cmd.app, name="client", help="Talk to a running `suti serve`.")


def run_app(typer_app: typer.Typer, argv: list[str] | None, prog_name: str) -> int:
    """Run a typer app in-process and return its exit code.

    User errors (`SutiError`, usage errors) print one line on stderr and give exit code 2; a
    traceback is only ever shown for a bug.
    """
    try:
        typer_app(args=argv, prog_name=prog_name, standalone_mode=False)
    except SutiError as e:
        typer.echo(f"error: {e}", err=True)
        return 2
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except Exception as e:
        # typer may ship its own copy of click, so match click's exception protocol, not its class.
        if type(e).__name__ == "Abort":
            typer.echo("aborted", err=True)
            return 1
        if type(e).__name__ == "Exit" and hasattr(e, "exit_code"):
            return int(e.exit_code)
        if hasattr(e, "show") and hasattr(e, "exit_code"):
            e.show()
            return int(e.exit_code)
        raise
    return 0


_register()


def main(argv: list[str] | None = None) -> int:
    """Run the `suti` CLI in-process; returns the exit code."""
    return run_app(app, argv, "suti")


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
