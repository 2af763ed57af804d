"""The one exception type whose message is shown to users as-is."""


class JbdiffError(Exception):
    """A user-facing error: its message is one sentence naming the thing and the problem."""
