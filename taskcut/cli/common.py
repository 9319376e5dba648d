"""The app, its shared options and the error handling every command runs under (one line, exit 2)."""

from __future__ import annotations

import errno
import functools
import inspect
import os
import signal
import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Optional, TypeVar

import typer
from rich.console import Console

from ..errors import TaskcutError, Terminated, on_sigterm

if TYPE_CHECKING:  # the command imports its modules when it runs, for a quick start
    from ..config import DistillConfig


app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Prune a pre-trained multi-task model into a compact model holding only the tasks a device needs.")
data_app = typer.Typer(no_args_is_help=True, help="Make and inspect data sets.")


@app.callback()
def _main_options(debug: bool = typer.Option(False, "--debug", help="Show the traceback of an unexpected error "
                                                                       "(same as TASKCUT_DEBUG=1).")) -> None:
    if debug:
        os.environ["TASKCUT_DEBUG"] = "1"

app.add_typer(data_app, name="data")
out = Console()
err = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., object])


#: Commands that keep their finished work in --out and continue it when run again.
RESUMABLE = ("fleet_cmd", "compare_cmd")


def _clean_errors(fn: F) -> F:
    """Every failure is one red line on stderr and exit status 2: a TaskcutError as it is, a full
    disk or another OS error with its path, anything unexpected with its type and a pointer to
    `TASKCUT_DEBUG=1`, which shows the traceback instead. Ctrl-C and SIGTERM end with exit 130/143."""

    options = inspect.signature(fn).parameters
    resume = ("A run with --checkpoint-every continues with --resume." if "resume" in options else
              "Run the same command again: finished devices and cells are kept." if fn.__name__ in RESUMABLE
              else "Run the same command again.")

    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            with _trust(kwargs.get("trust_code") is True, kwargs.get("config")):
                return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except TaskcutError as exc:
            _fail(str(exc))
        except (KeyboardInterrupt, Terminated) as exc:
            how, code = ("stopped by SIGTERM", 143) if isinstance(exc, Terminated) else ("stopped", 130)
            err.print(f"{how}; nothing half-written was left. {resume}", highlight=False, soft_wrap=True)
            raise typer.Exit(code) from None
        except OSError as exc:
            if os.environ.get("TASKCUT_DEBUG"):
                raise
            what = "the disk is full" if exc.errno == errno.ENOSPC else (exc.strerror or type(exc).__name__)
            _fail(f"{what}{f' writing {exc.filename}' if exc.filename else ''}; nothing half-written was left")
        except Exception as exc:
            if os.environ.get("TASKCUT_DEBUG"):
                raise
            from pydantic import ValidationError

            from ..fileio import is_disk_full

            if isinstance(exc, ValidationError):  # a setting out of its bounds, wherever it was built
                first_error = exc.errors()[0]
                _fail(f"{'.'.join(map(str, first_error['loc']))}: {first_error['msg']}")
            if is_disk_full(exc):  # a library that reports ENOSPC in its own error type
                _fail(f"the disk is full ({str(exc).splitlines()[0][:200]}); nothing half-written was left")
            first = str(exc).splitlines()[0][:300] if str(exc) else ""
            _fail(f"unexpected {type(exc).__name__}: {first} (taskcut --debug ... shows the traceback)")

    return wrapper  # type: ignore[return-value]


#: Options many commands share, declared once.
_DEVICE = typer.Option("cpu", help="torch device, e.g. cpu or cuda:0.")
_FORCE = typer.Option(False, help="Replace an existing output file.")
_QUIET = typer.Option(False, help="No progress bars or progress lines.")

#: On every command that opens a model file: a file is data unless the user says otherwise.
_TRUST_CODE = typer.Option(False, "--trust-code", help="Import and run the factory and task functions the model "
                           "file names (off: a model file is data, and opening one runs no code it names; an own "
                           "model's --config trusts what that YAML names).")


@contextlib.contextmanager
def _trust(trust_code: bool, config: object) -> Iterator[None]:
    """What this command may import from files it opens: everything with --trust-code, and the code an
    own model's --config names (the user wrote that YAML)."""
    from ..trust import trusting

    references: list[str] = []
    if isinstance(config, Path) and _own(config):
        from ..models.own_config import load_own_config

        references = load_own_config(config).references()
    with trusting(True if trust_code else references):
        yield


def _fail(message: str) -> None:
    from rich.markup import escape

    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)  # "[deploy]" is no markup
    raise typer.Exit(2)


def _check_size(size: tuple[int, int]) -> None:
    from ..settings import MAX_IMAGE_SIDE

    if size[0] <= 0 or size[1] <= 0:
        raise TaskcutError(f"--size must be two positive integers, got {size[0]} {size[1]}")
    if max(size) > MAX_IMAGE_SIDE:
        raise TaskcutError(f"--size {size[0]} {size[1]} is over the maximum side of {MAX_IMAGE_SIDE}")


def _own(config: Optional[Path]) -> bool:
    """Whether --config names an own model (a YAML with model.factory) rather than a preset-style config."""
    from ..models.own_config import is_own_config

    return is_own_config(config)


def _task_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


@contextlib.contextmanager
def _distributed(device: str) -> Iterator[str]:
    """Join torchrun's process group when launched by it (the device this rank uses); leave it after."""
    from ..train import distributed

    try:
        yield distributed.init(device)
    finally:
        distributed.shutdown()


def _check_device(device: str) -> None:
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise TaskcutError(f"--device {device!r} is not a torch device ({exc})") from exc
    if dev.type not in ("cpu", "cuda"):
        raise TaskcutError(f"--device {device}: taskcut runs on cpu or cuda devices")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TaskcutError(f"--device {device} asked for, but no CUDA device is available")


def _distill_settings(weight: float, temperature: float, features: float) -> "DistillConfig":
    """--distill-* options as settings, a bad value as one line naming its option."""
    import pydantic

    from ..config import DistillConfig

    try:
        return DistillConfig(weight=weight, temperature=temperature, features=features)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        raise TaskcutError(f"--distill-{err['loc'][0]}: {err['msg']}") from None


def main() -> None:
    signal.signal(signal.SIGTERM, on_sigterm)
    app()
