"""The one error type users see: a message that fits on one line and says what to change."""


class TaskcutError(Exception):
    """A problem with the user's input or files; the CLI prints it as one line and exits 2."""


def check_choice(available: "list[str] | tuple[str, ...]", wanted: "list[str]", noun: str,
                 listing: str) -> list[str]:
    """`wanted` names, all in `available` and none twice, in the order of `available`.

    One clear line otherwise, naming what is wrong and what may be chosen (`listing`).
    """
    if not wanted:
        raise TaskcutError(f"give at least one {noun}; {listing} {', '.join(available)}")
    unknown = [w for w in wanted if w not in available]
    if unknown:
        raise TaskcutError(f"unknown {noun}(s) {', '.join(unknown)}; {listing} {', '.join(available)}")
    if len(set(wanted)) != len(wanted):
        raise TaskcutError(f"{noun} list {wanted} names a {noun} twice")
    return [a for a in available if a in wanted]


class Terminated(BaseException):
    """SIGTERM as an exception, so every `finally` (temporary files and folders) runs before exit."""


_terminated = False


def on_sigterm(signum: int, frame: object) -> None:
    """The SIGTERM handler: remember the request, then raise. Native code that checks for signals may
    swallow the exception; long loops call `check_terminated`, so the request is never lost."""
    global _terminated
    _terminated = True
    raise Terminated()


def check_terminated() -> None:
    """Raise `Terminated` if a SIGTERM arrived (and was swallowed on its way)."""
    if _terminated:
        raise Terminated()
