"""What the rendering tests share: the site, the personal links, the headers, the line breaks."""

from __future__ import annotations

from digest.domain import Frequency, Site
from digest.render import Links

SITE = Site(
    name="Mia's Feed",
    url="https://miasfeed.example",
    sender="Mia's Feed <digest@example.org>",
    list_id="Mia's Feed digest <digest.example.org>",
)
LINKS = Links(
    unsubscribe="https://digest.example.org/unsubscribe/eyJpZCI6NDJ9.Zx1c9A",
    preferences="https://digest.example.org/preferences/eyJpZCI6NDJ9.Qm7aPw",
    web_version="https://digest.example.org/digests/Wzc3LDFd.Hq2wXc",
)
# An edition of each frequency: Monday 23 November 2026, its week, its month.
PERIOD_KEYS = {
    Frequency.DAILY: "2026-11-23",
    Frequency.WEEKLY: "2026-W48",
    Frequency.MONTHLY: "2026-11",
}

# Every digest carries these; one-click unsubscribe adds List-Unsubscribe-Post.
DIGEST_HEADERS = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "List-Id",
    "List-Unsubscribe",
    "MIME-Version",
    "Content-Type",
)
# A digest's headers: those it shares with the welcome mail, and Gmail's feedback loop's.
DIGEST_ONLY_HEADERS = (*DIGEST_HEADERS, "Feedback-ID")
# Every character str.splitlines() breaks at: any of them in a header would start a new one.
LINE_BOUNDARIES = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"
