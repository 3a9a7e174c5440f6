"""Talking to servers: TLS contexts, guarded HTTP(S) connections, retry and back-off.

- :mod:`exportmon.net.tls`: the one place a client TLS context is built, and TLS
  failures turned into one-line errors.
- :mod:`exportmon.net.http`: an HTTP(S) request to a checked, pinned address
  (no private addresses unless allowed, redirects re-checked), with an overall
  deadline, a minimum transfer rate and a streamed body either way.
- :mod:`exportmon.net.retry`: one retry and back-off policy (exponential, capped,
  jittered, ``Retry-After`` honoured) whose waits end as soon as a stop is requested.
"""
