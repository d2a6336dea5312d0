"""Custom Gradio components."""

from __future__ import annotations

import base64
import binascii

import gradio as gr
from gradio.data_classes import ImageData

from explorer.inference.predictor import InputError

from gradio.events import Dependency

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
            try:
                return base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise InputError("the pasted image is not valid base64 data; upload the file instead") from None
        if payload.path is None:
            raise InputError("the upload has no file; upload the photo again")
        return str(payload.path)
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component