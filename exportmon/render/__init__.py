"""Renderers: status and report data in, text for people or machines out.

The data comes from :mod:`exportmon.actions.status` (a ``StatusReport``) and
:mod:`exportmon.actions.report` (a ``Report``); nothing here reads a ledger or a
config. One module per format:

- :mod:`~exportmon.render.layout`: fitting tables to a width (terminal or pipe)
- :mod:`~exportmon.render.table`: the tables `status` and `report` print
- :mod:`~exportmon.render.text`: the plain-text report (the text part of its mail)
- :mod:`~exportmon.render.cells`: report fields as display cells, shared by the formats
- :mod:`~exportmon.render.json`: JSON, as ``--json`` and the status page's API give it
- :mod:`~exportmon.render.csv`, :mod:`~exportmon.render.markdown`,
  :mod:`~exportmon.render.html`: the report as CSV, Markdown and an HTML page
- :mod:`~exportmon.render.nagios`: the Nagios/Icinga plugin line and exit code
- :mod:`~exportmon.render.prometheus`: the Prometheus exposition (series in docs/metrics.md)
"""
