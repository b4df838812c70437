"""Content that looks like a secret or an API key.

A log that carries a credential must not become training data: a model learns to write what
it was trained on. The patterns are the well-known key formats (each with its fixed prefix and
length, so ordinary prose does not match) plus assignments of a long random-looking value to a
name like `api_key` or `password` (also as the end of a longer name: `OPENAI_API_KEY=`, hence
no word boundary before it, only no letter or digit). A finding names the pattern and where it was, never the
matched text: the import's reports must not copy the secret either.
"""

from __future__ import annotations

import re

# name -> pattern. Prefixed formats first (they say what the key is), the generic ones last.
PATTERNS: dict[str, re.Pattern[str]] = {
    "private_key": re.compile(r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----"),
    "anthropic_key": re.compile(r"\bsk-ant-[A-Za-z0-9_\-]{20,}"),
    "openai_key": re.compile(r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}"),
    "aws_access_key_id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "github_token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{50,})"),
    "gitlab_token": re.compile(r"\bglpat-[A-Za-z0-9_\-]{20,}"),
    "slack_token": re.compile(r"\bxox[abposr]-[A-Za-z0-9\-]{10,}"),
    "google_api_key": re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b"),
    "huggingface_token": re.compile(r"\bhf_[A-Za-z0-9]{30,}"),
    "stripe_key": re.compile(r"\b(?:sk|rk)_live_[A-Za-z0-9]{20,}"),
    "jwt": re.compile(r"\beyJ[A-Za-z0-9_\-]{10,}\.eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}"),
    "bearer_token": re.compile(r"\bBearer\s+[A-Za-z0-9_\-.=]{24,}"),
    "assigned_secret": re.compile(
        r"(?i)(?<![a-z0-9])(?:api[_\-]?key|secret(?:[_\-]?key)?|access[_\-]?token|auth[_\-]?token|password|passwd)"
        r"[\"']?\s*[:=]\s*[\"']?(?=[A-Za-z0-9_\-/+]*\d)(?=[A-Za-z0-9_\-/+]*[A-Za-z])[A-Za-z0-9_\-/+]{16,}"),
}


def find_secrets(text: str) -> list[str]:
    """The names of the patterns `text` matches, in the order of `PATTERNS` (no duplicates).
    A more specific key format hides the generic ones it also matches."""
    found = [name for name, pattern in PATTERNS.items() if pattern.search(text)]
    if "anthropic_key" in found and "openai_key" in found:
        found.remove("openai_key")        # sk-ant-... also reads as sk-...
    return found
