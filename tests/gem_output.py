"""What the gem's fixture zip must become, from tests/fixtures/itrp-gem/EXPECTED.md."""

from __future__ import annotations

GEM_ZIP = "20130923-072313-export.zip"

#: The files in the zip, by export type.
NAMES = {
    "calendars": "5-20130923-072312-calendars.csv",
    "organizations": "5-20130923-072312-organizations.csv",
    "organizations_contact_details": "5-20130923-072312-organizations_contact_details.csv",
    "sites": "5-20130923-072312-sites.csv",
}

#: A line of each file delivered unchanged.
UNCHANGED = {
    "calendars": "30,,,24x7 except Sunday 5:00am until Noon,mon,00:00,24:00\n",
    "organizations": (
        '27,,,0,Microsoft Corporation,0,,,,,"Global product licensing sales contact for Widget '
        'International, Corp.: Brian Waymore\nEmail: brian.waymore@microsoft.com"\n'
    ),
    "organizations_contact_details": (
        "International Business Machines Corporation (IBM),,,,street,590 Madison Avenue,"
        "New York,NY,10022,US,0\n"
    ),
    "sites": (
        '14,,,0,IT Training Facility,"4465 San Felipe Street, Suite 1508",Houston,TX,77027,US,'
        "Central Time (US & Canada),\n"
    ),
}

#: The rewrite options of the gem's test: row separator ``##\n``, column separator
#: ``|``, quote character ``:``, newlines in values replaced by ``<newline>``.
GEM_OPTIONS = {
    "row_sep": "##\n",
    "col_sep": "|",
    "quote_char": ":",
    "quoting": "gem",
    "replace_newlines": "<newline>",
}

#: A line of each file rewritten with :data:`GEM_OPTIONS` (sites' is the last line).
REWRITTEN = {
    "calendars": "30|::|::|:24x7 except Sunday 5::00am until Noon:|mon|:00::00:|:24::00:##\n",
    "organizations": (
        "27|::|::|0|Microsoft Corporation|0|::|::|::|::|:Global product licensing sales contact "
        "for Widget International, Corp.:: Brian Waymore<newline>Email:: "
        "brian.waymore@microsoft.com:##\n"
    ),
    "organizations_contact_details": (
        "International Business Machines Corporation (IBM)|::|::|::|street|590 Madison Avenue|"
        "New York|NY|10022|US|0##\n"
    ),
    "sites": (
        "14|::|::|0|IT Training Facility|4465 San Felipe Street, Suite 1508|Houston|TX|77027|US|"
        "Central Time (US & Canada)|::##\n"
    ),
}
