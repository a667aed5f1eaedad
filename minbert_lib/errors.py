"""The one error type a user of the library's commands meets.

A `MinbertError` says what was wrong and what to do in one line; the commands print it as
`error: <message>` and exit with status 2, never a traceback.
"""


class MinbertError(Exception):
    """A bad input or state the user can fix; the message says how."""
