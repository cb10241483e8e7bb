"""How entry points report errors: raymotion's own (bad config, bad input, a plan that does not fit) as one
line on stderr and exit code 2, the traceback only with ``-v``; anything else as a traceback (a bug).

raymotion raises ``ValueError`` (``config.ConfigError`` among them) for bad config and input,
``FileNotFoundError`` / ``FileExistsError`` for missing inputs and runs it would overwrite, and
``RaymotionError`` subclasses for the rest (``train.plan.UnschedulableError``). Ray wraps an error raised
inside a task, an actor or a Ray Data stage in its own exceptions, whose text ends in a long remote
traceback; ``user_error`` unwraps them so that the cause is what is printed, last.
"""

from __future__ import annotations

import re
import sys
import traceback


class RaymotionError(Exception):
    """Base of raymotion's error classes that are not ValueErrors (e.g. ``train.plan.UnschedulableError``)."""


USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, RaymotionError)
"""What raymotion raises for bad config and bad input: entry points print these without a traceback."""


def _is_ray_wrapper(err: BaseException) -> bool:
    # RayTaskError.as_instanceof_cause builds its classes in ray.exceptions, so they are caught here too.
    return type(err).__module__.startswith("ray.")


# The last line of a remote traceback's user error, e.g. "ValueError: video ... ends before frame 3" or
# "raymotion.config.ConfigError: train.video_gap=9 is invalid: ...".
_REMOTE_ERROR_LINE = re.compile(r"^(?:[\w.]+\.)?(ValueError|FileNotFoundError|FileExistsError|ConfigError|"
                                r"UnknownKeyError|UnschedulableError): (.+)$", re.MULTILINE)


def user_error(err: BaseException) -> BaseException | None:
    """The error to show instead of ``err``'s traceback: ``err`` itself when it is one of ``USER_ERRORS``, or,
    under Ray's wrappers (``RayTaskError``, Ray Data's ``UserCodeException``), the user error they carry.
    Ray ships a remote chain as text (an actor's ``raise ... from`` cause does not cross processes), so when
    no cause object is one, the last user-error line of the remote traceback is returned as a ValueError.
    None for anything else (a bug: let its traceback through)."""
    wrapped, seen = err, set()
    while _is_ray_wrapper(err) and id(err) not in seen:
        seen.add(id(err))
        inner = getattr(err, "cause", None) or err.__cause__
        if inner is None:
            break
        err = inner
    if isinstance(err, USER_ERRORS) and not _is_ray_wrapper(err):
        return err
    if _is_ray_wrapper(wrapped):
        lines = _REMOTE_ERROR_LINE.findall(str(wrapped))
        if lines:
            return ValueError(lines[-1][1])
    return None


def report_user_error(prog: str, err: BaseException, *, verbose: bool) -> bool:
    """Print a user error (``user_error(err)``) as ``<prog>: <message>`` with the exception's notes, the last
    lines on stderr (the traceback before them only when ``verbose``). False, printing nothing, when ``err``
    is not one: the caller re-raises it."""
    shown = user_error(err)
    if shown is None:
        return False
    if verbose:
        traceback.print_exception(err)
    notes = "".join(f"\n  ({note})" for note in getattr(shown, "__notes__", []))
    print(f"{prog}: {shown}{notes}", file=sys.stderr)
    return True
