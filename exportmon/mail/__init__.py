"""Where export mails come from, and how they are recognised.

:func:`open_source` gives the monitor's :class:`MailSource` (IMAP, POP3, Maildir,
mbox, a directory of ``.eml`` files); :mod:`exportmon.mail.message` recognises
export mails; :class:`~exportmon.mail.local.EmlFiles` serves ``fetch --eml``.
"""

from exportmon.mail.source import MailSource, PolledMail, open_source

__all__ = ["MailSource", "PolledMail", "open_source"]
