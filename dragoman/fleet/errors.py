"""Why a call could not be placed; the api maps each to its HTTP answer."""

from __future__ import annotations


class NoAgentAvailable(Exception):
    """No free call slot anywhere (or the node is draining): 503 with Retry-After."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class CallRejected(Exception):
    """The offer itself is unusable (malformed SDP, bad language pair): 400."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class AgentFailed(Exception):
    """The agent (or its whole node) died or stalled before answering."""


class UnknownCall(Exception):
    """No such call (anymore): 404."""


class WrongCallToken(Exception):
    """The call exists but the token presented for it is not its control token: 403."""
