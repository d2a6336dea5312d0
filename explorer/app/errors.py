"""Turn exceptions in event handlers into Gradio error messages without stack traces."""

from __future__ import annotations

import functools
import html
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import gradio as gr

from explorer.core.checkpoints import CheckpointError

logger = logging.getLogger(__name__)

Handler = TypeVar("Handler", bound=Callable[..., Any])

# Seconds an error stays on screen; None would keep it until closed.
ERROR_DURATION = 15


def user_error(message: str) -> gr.Error:
    """Build the ``gr.Error`` shown for a rejected input.

    Gradio renders the message as HTML, so file names and typed values are
    escaped. The server log has the details, so no traceback is printed.
    """
    return gr.Error(html.escape(message, quote=False), duration=ERROR_DURATION, print_exception=False)


def handle_errors(function: Handler) -> Handler:
    """Wrap an event handler so that every failure reaches the user as a ``gr.Error``.

    ``ValueError`` (which includes the project's input, annotation, image and
    checkpoint errors) shows its message and is logged as a warning. Any
    other exception is logged with its traceback and shown as a generic
    message, so the page never shows a stack trace and the server keeps
    serving.
    """

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except gr.Error:
            raise
        except CheckpointError as error:
            logger.warning("%s: checkpoint error: %s", function.__name__, error)
            raise user_error(f"Checkpoint problem: {error}") from None
        except ValueError as error:
            logger.warning("%s rejected its input: %s", function.__name__, error)
            raise user_error(str(error)) from None
        except MemoryError:
            logger.exception("%s ran out of memory", function.__name__)
            raise user_error("The server ran out of memory for this request; try a smaller photo.") from None
        except Exception:
            logger.exception("%s failed", function.__name__)
            raise user_error(
                f"Internal error in {function.__name__}; the server log has the details. "
                "Try another photo or reload the page."
            ) from None

    return wrapper  # type: ignore[return-value]
