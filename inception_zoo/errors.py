"""One error type for mistakes a user can fix (bad name, bad config, bad input).

Entry points catch `UserError` and print its one-line message instead of a traceback.
"""
import difflib
from typing import Iterable


class UserError(ValueError):
  """A mistake in what the user asked for; the message names the cause in one line."""


def did_you_mean(name: str, options: Iterable[str]) -> str:
  """' (did you mean 'x'?)' for the closest option, or '' when nothing is close."""
  close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
  return f"; did you mean '{close[0]}'?" if close else ""
