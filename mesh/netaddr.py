"""Parsing and formatting "host:port" addresses (IPv6 hosts in brackets)."""

from __future__ import annotations

import ipaddress


class AddressError(ValueError):
    """An address the user gave is not "host:port"."""


def split_hostport(text: str) -> tuple[str, int]:
    """("host", port) from "host:port" or "[v6]:port"; AddressError names the problem."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise AddressError(f"{text!r} is not an address; write it as HOST:PORT, e.g. 127.0.0.1:7946")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise AddressError(f"{text!r}: put an IPv6 address in brackets, e.g. [::1]:7946")
    # int() alone would take " 80", "+80", "8_0" and "80\n".
    if not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5):
        raise AddressError(f"{text!r}: port {port_text[:16]!r} is not a number")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise AddressError(f"{text!r}: port {port} is outside 0-65535")
    return host, port


def join_hostport(host: str, port: int) -> str:
    """ "host:port", with brackets around an IPv6 host."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_unspecified(host: str) -> bool:
    """True for 0.0.0.0 and ::, addresses a peer cannot send to."""
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False
