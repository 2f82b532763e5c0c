"""Host names of certificates: what SNI matches against, read from the certificate."""

from __future__ import annotations

import datetime
import re

from cryptography import x509

from potok.tls.context import CertificateError

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def check_name(name: str) -> str:
    """A host name SNI can match: lower-case; `*.` only as the whole first label."""
    text = name.strip().lower().rstrip(".")
    labels = text.split(".")
    rest = labels[1:] if labels[0] == "*" else labels
    wildcard_too_short = labels[0] == "*" and len(rest) < 2  # `*.com`: not one site
    if wildcard_too_short or not rest or not all(_LABEL.match(label) for label in rest):
        raise CertificateError(
            f"{name!r}: a host name ('api.example.com') or a one-label wildcard ('*.example.com')"
        )
    return text


def _leaf(path: str) -> x509.Certificate:
    try:
        with open(path, "rb") as file:
            return x509.load_pem_x509_certificate(file.read())
    except (OSError, ValueError) as exc:
        raise CertificateError(f"{path}: not a PEM certificate ({exc})") from None


def certificate_names(path: str) -> tuple[str, ...]:
    """The DNS names of the first certificate in a PEM file (SANs; the CN if it has none)."""
    leaf = _leaf(path)
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = [
            str(attribute.value)
            for attribute in leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        ]
    found: list[str] = []
    for name in names:
        try:
            found.append(check_name(name))
        except CertificateError:
            continue  # an IP-like or odd CN: not something SNI carries
    return tuple(dict.fromkeys(found))


def expiry_warning(path: str) -> str | None:
    """A sentence if the certificate in `path` is outside its validity period."""
    leaf = _leaf(path)
    now = datetime.datetime.now(datetime.UTC)
    if leaf.not_valid_after_utc < now:
        return f"expired on {leaf.not_valid_after_utc.isoformat()}"
    if leaf.not_valid_before_utc > now:
        return f"not valid before {leaf.not_valid_before_utc.isoformat()}"
    return None
