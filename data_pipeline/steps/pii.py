"""Redact e-mail addresses and IP addresses, on top of datatrove's PIIFormatter."""

from __future__ import annotations

import ipaddress
from typing import Callable

from datatrove.pipeline.formatters.pii import PIIFormatter, PIIReplacer

from data_pipeline.config import PiiConfig

_IPV4 = r"(?:\d{1,3}\.){3}\d{1,3}"
# Candidates only; `identifies_a_host` decides what is an address. The lookarounds stop a match inside a
# longer dotted or colon-separated token, so "1.2.3.4.5" and "v1.2.3.4" stay; a sentence's final period may
# follow an address. The IPv6 candidate allows an embedded IPv4 tail (::ffff:192.0.2.1).
_IP_CANDIDATE = (
    rf"(?<![\w.:])(?:[0-9A-Fa-f]{{0,4}}:){{2,8}}(?:{_IPV4}|[0-9A-Fa-f]{{1,4}})?(?![\w:]|\.\d)"
    rf"|(?<![\w.]){_IPV4}(?![\w]|\.\d)"
)


def identifies_a_host(candidate: str) -> bool:
    """Whether `candidate` is an IP address that can point at someone's machine or network.

    Public and private (LAN) addresses can; loopback, unspecified, multicast, link-local and reserved
    ones (127.0.0.1, 0.0.0.0, ::, 255.255.255.0, ...) name no one and are common in technical text.
    Four single digits ("Thunderbird 1.5.0.9", "Section 8.2.1.3") are kept too: they are version or
    section numbers far more often than addresses, and the addresses among them (1.1.1.1, 8.8.8.8) are
    public resolvers.
    """
    try:
        ip = ipaddress.ip_address(candidate)
    except ValueError:  # "12:30:45", "999.1.1.1"
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.version == 4 and max(ip.packed) < 10:
        return False
    return not (ip.is_loopback or ip.is_unspecified or ip.is_multicast or ip.is_link_local or ip.is_reserved)


class _CountingReplacer(PIIReplacer):
    """datatrove's PIIReplacer, counting the matches it replaces (its validator hook sees every match)."""

    def __init__(self, regex: str, replacement: str, validator: Callable[[str], bool] | None = None):
        super().__init__(regex, replacement, validator=self._count_if_valid)
        self._is_valid = validator
        self.replaced = 0

    def _count_if_valid(self, match: str) -> bool:
        if self._is_valid is not None and not self._is_valid(match):
            return False
        self.replaced += 1
        return True

    def take_count(self) -> int:
        count, self.replaced = self.replaced, 0
        return count


class PiiRedactor(PIIFormatter):
    """Replaces e-mail addresses and IPv4/IPv6 addresses with the configured placeholders.

    E-mail addresses use datatrove's pattern. IP addresses use this module's pattern, which adds IPv6 and
    token boundaries to datatrove's IPv4-only one, and `identifies_a_host`. Version strings ("3.11.7") never
    match; a four-part dotted number with every part <= 255 and some part >= 10 ("2.10.0.1") cannot be told
    from an address and is redacted. Records "emails_redacted" and "ips_redacted" (addresses replaced).
    """

    name = "📞 PII redaction"

    def __init__(self, config: PiiConfig | None = None):
        config = config or PiiConfig()
        super().__init__(email_replacement=config.email_replacement, ip_replacement=config.ip_replacement)
        self.emails_replacer = _CountingReplacer(self.emails_replacer.regex.pattern, config.email_replacement)
        self.ip_replacer = _CountingReplacer(_IP_CANDIDATE, config.ip_replacement, validator=identifies_a_host)

    def format(self, text: str) -> str:
        text = super().format(text)
        for stat, replacer in (("emails_redacted", self.emails_replacer), ("ips_redacted", self.ip_replacer)):
            if count := replacer.take_count():
                self.stat_update(stat, value=count)
        return text
