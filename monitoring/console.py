"""Numbers as a person reads them in a console line or a report: `4,578`, `1.2M`, `3.4 GB`, `52.1%`."""

from __future__ import annotations


def human_bytes(n: float | None) -> str:
    """Decimal units: 999 B, 1.0 KB ... 12.3 TB (`-` when unknown)."""
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def human_count(n: float) -> str:
    """A count with a K/M/B/T suffix above 9,999 (tokens, documents): 10.2K, 1.5M, 10.0T."""
    if abs(n) < 10_000:
        return f"{n:,.0f}"
    for unit in ("K", "M", "B", "T"):
        n /= 1000
        if abs(n) < 1000 or unit == "T":
            return f"{n:.1f}{unit}"
    return str(n)


def percent(fraction: float) -> str:
    return f"{100 * fraction:.1f}%"
