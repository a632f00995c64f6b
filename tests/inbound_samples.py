"""Mail that comes back, in the shapes the big receivers send, written by us: a plain RFC 3464
report, a Gmail-, an Outlook- and a Yahoo-style bounce, an ARF complaint (RFC 5965), a delay, an
auto-reply and a mail to the mailto: unsubscribe address. Each names its digest as a real one
would: sent to our return path, and quoting the original's headers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sent:
    """What a digest looked like on the wire: enough for a report to quote it."""

    return_path: str  # MAIL FROM
    recipient: str
    message_id: str
    subject: str = "Your weekly digest · 30 November – 6 December"


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def _quoted(sent: Sent) -> str:
    return (
        f"Return-Path: <{sent.return_path}>\n"
        "From: Mia's Feed <digest@miasfeed.example>\n"
        f"To: {sent.recipient}\n"
        f"Subject: {sent.subject}\n"
        f"Message-ID: {sent.message_id}\n"
        "Date: Mon, 30 Nov 2026 09:00:00 +0000\n"
    )


def _report(
    sent: Sent, *, sender: str, subject: str, human: str, blocks: str, to: str | None = None
) -> bytes:
    return _crlf(
        f"From: {sender}\n"
        f"To: <{to or sent.return_path}>\n"
        f"Subject: {subject}\n"
        "Auto-Submitted: auto-replied\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="=_report"\n'
        "\n"
        "--=_report\n"
        "Content-Type: text/plain; charset=utf-8\n"
        "\n"
        f"{human}\n"
        "\n"
        "--=_report\n"
        "Content-Type: message/delivery-status\n"
        "\n"
        f"{blocks}\n"
        "--=_report\n"
        "Content-Type: text/rfc822-headers\n"
        "\n"
        f"{_quoted(sent)}\n"
        "--=_report--\n"
    )


def rfc3464(sent: Sent, status: str = "5.1.1", action: str = "failed") -> bytes:
    """Postfix's report, as RFC 3464 has it."""
    return _report(
        sent,
        sender="MAILER-DAEMON@relay.example (Mail Delivery System)",
        subject="Undelivered Mail Returned to Sender",
        human="I'm sorry to have to inform you that your message could not be delivered.",
        blocks=(
            "Reporting-MTA: dns; relay.example\n"
            "\n"
            f"Final-Recipient: rfc822; {sent.recipient}\n"
            f"Original-Recipient: rfc822;{sent.recipient}\n"
            f"Action: {action}\n"
            f"Status: {status}\n"
            f"Diagnostic-Code: smtp; 550 {status} <{sent.recipient}>: Recipient address rejected\n"
        ),
    )


def gmail(sent: Sent) -> bytes:
    return _report(
        sent,
        sender="Mail Delivery Subsystem <mailer-daemon@googlemail.com>",
        subject="Delivery Status Notification (Failure)",
        human=(
            f"** Address not found **\n\nYour message wasn't delivered to {sent.recipient} "
            "because the address couldn't be found, or is unable to receive mail."
        ),
        blocks=(
            "Reporting-MTA: dns; googlemail.com\n"
            "Arrival-Date: Mon, 30 Nov 2026 01:00:03 -0800 (PST)\n"
            "\n"
            f"Final-Recipient: rfc822; {sent.recipient}\n"
            "Action: failed\n"
            "Status: 5.1.1\n"
            "Remote-MTA: dns; gmail-smtp-in.l.google.com. (142.250.1.26, the server for the "
            "domain gmail.com.)\n"
            "Diagnostic-Code: smtp; 550-5.1.1 The email account that you tried to reach does not "
            "exist.\n"
        ),
    )


def outlook(sent: Sent) -> bytes:
    return _report(
        sent,
        sender="postmaster@outlook.com",
        subject=f"Undeliverable: {sent.subject}",
        human=(
            "Your message to " + sent.recipient + " couldn't be delivered.\n"
            "The email address wasn't found at the destination domain."
        ),
        blocks=(
            "Reporting-MTA: dns;AM0PR01MB0001.eurprd01.prod.outlook.com\n"
            "Received-From-MTA: dns;relay.example\n"
            "\n"
            f"Final-Recipient: rfc822;{sent.recipient}\n"
            "Action: failed\n"
            "Status: 5.1.10\n"
            "Diagnostic-Code: smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not "
            "found by SMTP address lookup\n"
        ),
    )


def yahoo(sent: Sent) -> bytes:
    """Yahoo's own plain-text format: no report part, the original below a line."""
    return _crlf(
        "From: MAILER-DAEMON@yahoo.com\n"
        f"To: {sent.return_path}\n"
        "Subject: Failure Notice\n"
        "X-Uidl: 1234567890\n"
        "\n"
        "Sorry, we were unable to deliver your message to the following address.\n"
        "\n"
        f"<{sent.recipient}>:\n"
        f"554: delivery error: dd This user doesn't have a yahoo.com account "
        f"({sent.recipient}) [0] - mta1001.mail.ir2.yahoo.com\n"
        "\n"
        "--- Below this line is a copy of the message.\n"
        "\n"
        f"{_quoted(sent)}"
    )


def delay(sent: Sent) -> bytes:
    return rfc3464(sent, status="4.2.2", action="delayed")


def arf(sent: Sent, feedback_to: str) -> bytes:
    """A feedback loop's complaint, RFC 5965: sent to the loop's address, quoting the message."""
    return _crlf(
        "From: Yahoo! Mail AntiSpam Feedback <feedback@arf.mail.yahoo.com>\n"
        f"To: {feedback_to}\n"
        "Subject: FW: abuse report\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="=_arf"\n'
        "\n"
        "--=_arf\n"
        "Content-Type: text/plain\n"
        "\n"
        "This is an email abuse report for an email message received.\n"
        "\n"
        "--=_arf\n"
        "Content-Type: message/feedback-report\n"
        "\n"
        "Feedback-Type: abuse\n"
        "User-Agent: Yahoo!-Mail-Feedback/2.0\n"
        "Version: 1\n"
        f"Original-Mail-From: <{sent.return_path}>\n"
        f"Original-Rcpt-To: <{sent.recipient}>\n"
        "\n"
        "--=_arf\n"
        "Content-Type: message/rfc822\n"
        "\n"
        f"{_quoted(sent)}"
        "\n"
        "The digest's text.\n"
        "\n"
        "--=_arf--\n"
    )


def auto_reply(sent: Sent) -> bytes:
    return _crlf(
        f"From: {sent.recipient}\n"
        f"To: {sent.return_path}\n"
        "Subject: Out of office: back on Monday\n"
        "Auto-Submitted: auto-replied\n"
        "X-Autoreply: yes\n"
        "\n"
        "I am away until Monday 7 December, with no access to mail.\n"
    )


def mailto_unsubscribe(from_address: str, to: str) -> bytes:
    """What a mail client sends for List-Unsubscribe's mailto: form."""
    return _crlf(f"From: {from_address}\nTo: {to}\nSubject: unsubscribe\n\nunsubscribe\n")


def mbox(*mails: bytes) -> bytes:
    """Mails as a relay's bounce mailbox keeps them, one after another."""
    out = []
    for mail in mails:
        text = mail.replace(b"\r\n", b"\n")
        escaped = b"\n".join(
            b">" + line if line.startswith(b"From ") else line for line in text.split(b"\n")
        )
        out.append(b"From MAILER-DAEMON Mon Nov 30 09:05:00 2026\n" + escaped + b"\n")
    return b"".join(out)
