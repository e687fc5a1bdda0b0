"""The web UI (`framepack ui`): a Gradio page over the persistent job queue (`framepack.queue`).

`framepack.ui.requests` maps the form to `GenerationOptions` (the CLI's validation),
`framepack.ui.views` computes what the page shows, `framepack.ui.app.create_demo` builds the page.
Gradio is imported only by `create_demo` (the `ui` extra).
"""
