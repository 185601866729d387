"""Text rules the validators apply, in a form that also goes into the OpenAPI document."""

from __future__ import annotations

# `strip_whitespace` removes Unicode White_Space (pydantic-core trims as Rust's `str::trim` does), so a string that
# is still non-empty after it holds a character outside that set. As a `pattern` (unanchored: the string *contains*
# such a character) it is redundant for the validator and tells clients that blank text (" ", "\f") is refused.
NOT_BLANK = r"[^\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
