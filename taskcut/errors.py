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
