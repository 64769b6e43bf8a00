"""Errors that reach the user as one clear line."""


class SiyuError(Exception):
    """A problem the user can fix (bad input, bad config, missing data); printed without traceback."""

    exit_code = 2
