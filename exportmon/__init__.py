"""exportmon: watch a mailbox for export-ready mails and deliver the exports exactly once."""

__version__ = "0.1.0"
