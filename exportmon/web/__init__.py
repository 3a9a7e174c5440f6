"""The live status page and its JSON and metrics endpoints (``exportmon serve``).

* :mod:`exportmon.web.data` gathers what is shown: every monitor's status (a
  config that does not load is a monitor in error), recent exports, metrics;
* :mod:`exportmon.web.page` renders the page (every value escaped);
* :mod:`exportmon.web.server` answers HTTP on a loopback address, or on another
  one only behind a token or basic auth.

The standard library's threading HTTP server is enough here: the service is
read-only, answers a handful of small GET requests per refresh, and a web
framework would be the install's heaviest dependency for no feature it needs.
"""
