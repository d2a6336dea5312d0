"""Custom Gradio components."""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

import gradio as gr
from gradio.data_classes import ImageData

from explorer.app.config import MAX_FILE_SIZE
from explorer.app.errors import user_error


class PhotoUpload(gr.Image):
    """An image input that hands the handler the uploaded file unopened.

    ``gr.Image`` opens every upload with PIL before the handler runs, so a
    non-image, a truncated file or a decompression bomb fails inside Gradio
    with a generic message. This subclass returns the uploaded file's path
    (or the bytes of a pasted data URL), and :func:`load_upload` validates it
    with a message that names the problem. The browser side is the standard
    image component (``is_template`` makes Gradio reuse it).
    """

    is_template = True

    def preprocess(self, payload: ImageData | None) -> str | bytes | None:  # type: ignore[override]
        if payload is None:
            return None
        if payload.url and payload.url.startswith("data:"):
            _, _, encoded = payload.url.partition(",")
            size = len(encoded) * 3 // 4
            if size > MAX_FILE_SIZE:
                raise user_error(
                    f"the pasted image is {size / 2**20:.1f} MiB, above the upload limit of "
                    f"{MAX_FILE_SIZE / 2**20:.0f} MiB; downscale it or save it as a JPEG"
                )
            try:
                return base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise user_error("the pasted image is not valid base64 data; upload the file instead") from None
        if payload.path is None:
            raise user_error("the upload has no file; upload the photo again")
        return str(payload.path)


def checked_number(label: str | None, payload: Any, minimum: float | None, maximum: float | None) -> float:
    """Return ``payload`` as a finite float within [minimum, maximum], or raise a ``gr.Error`` that names the field.

    Gradio's own checks raise "Value 100 is greater than maximum value 4.0"
    without the field's name, and fail with a generic error for None, text
    or NaN (which Python's JSON parser accepts from a raw request).
    """
    name = label or "the number"
    if minimum is not None and maximum is not None:
        allowed = f"choose a value from {minimum:g} to {maximum:g}"
    elif minimum is not None:
        allowed = f"choose a value of at least {minimum:g}"
    else:
        allowed = "type a number"
    if payload is None:
        raise user_error(f"{name}: no value was given; {allowed}")
    if isinstance(payload, bool):
        raise user_error(f"{name}: {payload!r} is not a number; {allowed}")
    try:
        value = float(payload)
    except (TypeError, ValueError, OverflowError):
        raise user_error(f"{name}: {str(payload)[:40]!r} is not a number; {allowed}") from None
    if not math.isfinite(value):
        raise user_error(f"{name}: {value} is not a finite number; {allowed}")
    if minimum is not None and value < minimum:
        raise user_error(f"{name}: {value:g} is below the minimum {minimum:g}; {allowed}")
    if maximum is not None and value > maximum:
        raise user_error(f"{name}: {value:g} is above the maximum {maximum:g}; {allowed}")
    return value


class CheckedSlider(gr.Slider):
    """A slider whose out-of-range, missing or non-numeric values get messages that name the slider.

    The browser side is the standard slider (``is_template``).
    """

    is_template = True

    def preprocess(self, payload: float) -> float:  # type: ignore[override]
        value = checked_number(self.label, payload, self.minimum, self.maximum)
        return gr.Number.round_to_precision(value, self.precision)


class CheckedNumber(gr.Number):
    """A number field that names itself in its error messages; an empty field passes None to the handler.

    The browser side is the standard number field (``is_template``).
    """

    is_template = True

    def preprocess(self, payload: float | None) -> float | int | None:  # type: ignore[override]
        if payload is None:
            return None
        value = checked_number(self.label, payload, self.minimum, self.maximum)
        if self.precision == 0 and not value.is_integer():
            raise user_error(f"{self.label or 'the number'}: {value:g} is not a whole number; type a whole number")
        return self.round_to_precision(value, self.precision)
