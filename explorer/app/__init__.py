"""The Gradio web app: one module per tab, shared figures, face sources and error handling.

Start it with ``python app.py`` or build it in code with
:func:`explorer.app.main.build_app`.
"""
