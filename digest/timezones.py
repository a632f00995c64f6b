"""The timezones the sign-up and preferences pages offer: a short list people recognise.

zoneinfo knows some 600 names, most of them cities nobody looks for. The pages offer these,
by region and by the name people know them by; the reader's own zone, if it is another one
(the browser's, or one chosen before), is added to the list rather than lost. Any valid IANA
name that is posted is still accepted (addresses.check_timezone).
"""

from __future__ import annotations

COMMON: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    (
        "Americas",
        (
            ("Pacific/Honolulu", "Honolulu (US Hawaii)"),
            ("America/Anchorage", "Anchorage (US Alaska)"),
            ("America/Los_Angeles", "Los Angeles (US Pacific)"),
            ("America/Vancouver", "Vancouver (Canada Pacific)"),
            ("America/Phoenix", "Phoenix (US Arizona)"),
            ("America/Denver", "Denver (US Mountain)"),
            ("America/Chicago", "Chicago (US Central)"),
            ("America/Mexico_City", "Mexico City (Mexico)"),
            ("America/New_York", "New York (US Eastern)"),
            ("America/Toronto", "Toronto (Canada Eastern)"),
            ("America/Bogota", "Bogotá (Colombia)"),
            ("America/Lima", "Lima (Peru)"),
            ("America/Halifax", "Halifax (Canada Atlantic)"),
            ("America/Santiago", "Santiago (Chile)"),
            ("America/St_Johns", "St. John's (Newfoundland)"),
            ("America/Argentina/Buenos_Aires", "Buenos Aires (Argentina)"),
            ("America/Sao_Paulo", "São Paulo (Brazil)"),
        ),
    ),
    (
        "Europe and Africa",
        (
            ("UTC", "UTC"),
            ("Europe/London", "London (UK)"),
            ("Europe/Dublin", "Dublin (Ireland)"),
            ("Europe/Lisbon", "Lisbon (Portugal)"),
            ("Africa/Casablanca", "Casablanca (Morocco)"),
            ("Africa/Lagos", "Lagos (Nigeria)"),
            ("Europe/Madrid", "Madrid (Spain)"),
            ("Europe/Paris", "Paris (France)"),
            ("Europe/Amsterdam", "Amsterdam (Netherlands)"),
            ("Europe/Berlin", "Berlin (Germany)"),
            ("Europe/Rome", "Rome (Italy)"),
            ("Europe/Stockholm", "Stockholm (Sweden)"),
            ("Europe/Warsaw", "Warsaw (Poland)"),
            ("Africa/Johannesburg", "Johannesburg (South Africa)"),
            ("Africa/Cairo", "Cairo (Egypt)"),
            ("Europe/Athens", "Athens (Greece)"),
            ("Europe/Helsinki", "Helsinki (Finland)"),
            ("Europe/Kyiv", "Kyiv (Ukraine)"),
            ("Europe/Istanbul", "Istanbul (Turkey)"),
            ("Europe/Moscow", "Moscow (Russia)"),
            ("Africa/Nairobi", "Nairobi (Kenya)"),
        ),
    ),
    (
        "Asia and Pacific",
        (
            ("Asia/Dubai", "Dubai (UAE)"),
            ("Asia/Karachi", "Karachi (Pakistan)"),
            ("Asia/Kolkata", "India (Delhi, Mumbai, Kolkata)"),
            ("Asia/Dhaka", "Dhaka (Bangladesh)"),
            ("Asia/Bangkok", "Bangkok (Thailand)"),
            ("Asia/Jakarta", "Jakarta (Indonesia)"),
            ("Asia/Singapore", "Singapore"),
            ("Asia/Hong_Kong", "Hong Kong"),
            ("Asia/Shanghai", "China (Beijing, Shanghai)"),
            ("Asia/Manila", "Manila (Philippines)"),
            ("Australia/Perth", "Perth (Western Australia)"),
            ("Asia/Seoul", "Seoul (South Korea)"),
            ("Asia/Tokyo", "Tokyo (Japan)"),
            ("Australia/Adelaide", "Adelaide (South Australia)"),
            ("Australia/Brisbane", "Brisbane (Queensland)"),
            ("Australia/Sydney", "Sydney (Australia Eastern)"),
            ("Pacific/Auckland", "Auckland (New Zealand)"),
        ),
    ),
)
LABELS = {name: label for _, zones in COMMON for name, label in zones}


def label(name: str) -> str:
    """What a reader calls the zone: its label on the list, else its IANA name, spaced."""
    return LABELS.get(name) or name.replace("_", " ")
