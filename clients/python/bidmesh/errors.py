"""The exceptions of the bidmesh client. All derive from BidmeshError."""


class BidmeshError(Exception):
    """Base of every error this package raises."""


class RequestError(BidmeshError):
    """The mesh answered with `ok: false`.

    `code` is the contract's error code (`bad_request`, `too_low`, `closed`, `forbidden`, ...),
    `message` its sentence for a person, `reply` the whole decoded reply (a `too_low` carries
    `max`, a `moved` carries `node` and `endpoint`), `id` the request's id. An `unavailable` or
    `internal` is raised only once the client's retries are spent.
    """

    def __init__(self, reply):
        self.reply = reply
        self.code = reply.get("error")
        self.message = reply.get("message")
        self.id = reply.get("id")
        super().__init__("%s: %s" % (self.code, self.message))

    @property
    def retryable(self):
        """True for the codes the contract calls safe to retry with the same id."""
        return self.code in RETRYABLE_CODES


class NoReply(BidmeshError, TimeoutError):
    """No reply came after every try (timeout_ms each, retries + 1 tries).

    For a write, the effect may or may not have happened: send the same request again with the
    same `id` (the exception carries it) to learn its outcome without doubling it.
    """

    def __init__(self, request_id, attempts, timeout_ms, endpoint):
        self.id = request_id
        self.attempts = attempts
        super().__init__("no reply from %s to request %r after %d tries of %d ms"
                         % (endpoint, request_id, attempts, timeout_ms))


class BadReply(BidmeshError):
    """A reply arrived but is not a MessagePack map with string keys (not the mesh speaking)."""


class CertificateError(BidmeshError):
    """A certificate file that cannot be used; the message names the file and the fix."""


# The error codes that the contract calls safe to retry with the same id (besides `moved`, which
# is retried at another endpoint, not here).
RETRYABLE_CODES = frozenset({"unavailable", "internal"})
