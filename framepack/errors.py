"""User-facing errors.

`UserError` is raised for anything a user can get wrong (a path, a flag, a file format). The CLI
prints its message as one line and exits with code 2, without a traceback. Library code raises
`ValueError` for programming errors (e.g. an invalid schedule built in Python); the CLI also
turns those into one-line messages when they come from user input.
"""


class UserError(Exception):
    """An input error with a one-line message saying what is wrong and how to fix it."""
