"""A small read-only client of ChannelFinder's REST service, behind the plugins' ``cf_*`` helpers.

ChannelFinder (the EPICS channel directory; facilities fill it with a feeder that tags each PV
with properties such as ``iocName``, ``devgroup``, ``devtype``, ``device``, ``zone``) answers
``GET {url}/resources/channels?~name=GLOB&PROPERTY=GLOB&~tag=...&~size=N`` with a JSON list of
channels: ``{"name", "owner", "properties": [{"name", "value", "owner"}], "tags": [...]}``.
A plugin turns this on with the ``channelfinder_url`` parameter (for example
``http://cf-host:8080/ChannelFinder``) and may set ``channelfinder_timeout`` (seconds).

Only the standard library is used (``urllib``): no extra to install. A service that cannot be
reached, answers an HTTP error or something that is not a JSON list of channels raises
``ChannelFinderError`` naming the URL asked and the cause.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

DEFAULT_TIMEOUT = 10.0  # seconds per request: iocmng's default for ``channelfinder_timeout``
DEFAULT_SIZE = 10000  # channels asked for at most per search, as iocmng asks


class ChannelFinderError(RuntimeError):
    """ChannelFinder could not answer a search; the message names the URL and the cause."""


class ChannelFinderClient:
    """Searches one ChannelFinder service (``url``: its base, ending in ``/ChannelFinder``)."""

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"channelfinder_url must be an http(s) URL, got {url!r}")
        self.base_url = url.rstrip("/")
        self.timeout = float(timeout)

    def search(self, *, name: str | None = None, iocName: str | None = None,
               devgroup: str | None = None, devtype: str | None = None, zone: str | None = None,
               tag: str | None = None, size: int = DEFAULT_SIZE, **properties: str) -> list[dict[str, Any]]:
        """The channels matching every filter given (ChannelFinder globs: ``*``, ``?``): ``name``
        the PV name, ``tag`` a tag, the others (and any ``properties``) property values."""
        query: dict[str, str] = {"~size": str(int(size))}
        if name:
            query["~name"] = name
        if tag:
            query["~tag"] = tag
        for key, value in {"iocName": iocName, "devgroup": devgroup, "devtype": devtype, "zone": zone,
                           **properties}.items():
            if value:
                query[key] = str(value)
        return self._channels(f"{self.base_url}/resources/channels?{urllib.parse.urlencode(query)}")

    def discover_devices(self, *, name: str | None = None, iocName: str | None = None,
                         devgroup: str | None = None, devtype: str | None = None,
                         zone: str | None = None) -> list[dict[str, Any]]:
        """The matching channels grouped into devices, one descriptor per device as
        ``cf_create_device`` takes it: ``name`` (the PV name's second-to-last segment),
        ``prefix`` (the ``device`` property, else the PV name without its last segment),
        ``devgroup``, ``devtype``, ``iocname``, ``template``, ``properties`` (of its first
        channel) and ``pvs`` (its channels' names, in the service's order)."""
        found: dict[str, dict[str, Any]] = {}
        for channel in self.search(name=name, iocName=iocName, devgroup=devgroup, devtype=devtype, zone=zone):
            pv_name = str(channel.get("name", ""))
            props = properties_of(channel)
            head, sep, _field = pv_name.rpartition(":")
            stem = head.rpartition(":")[2] if sep else pv_name
            descriptor = found.setdefault(stem, {
                "name": stem,
                "devgroup": props.get("devgroup", ""),
                "devtype": props.get("devtype", ""),
                "prefix": props.get("device") or (head if sep else pv_name),
                "iocname": props.get("iocName", ""),
                "template": props.get("template", ""),
                "properties": props,
                "pvs": [],
            })
            descriptor["pvs"].append(pv_name)
        return list(found.values())

    def _channels(self, url: str) -> list[dict[str, Any]]:
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            raise ChannelFinderError(f"ChannelFinder at {url} answered HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ChannelFinderError(f"ChannelFinder at {url} cannot be reached: {reason}") from exc
        try:
            channels = json.loads(body)
        except ValueError as exc:
            raise ChannelFinderError(f"ChannelFinder at {url} answered something that is not JSON: {exc} "
                                     f"(starts {body[:80]!r})") from exc
        if not isinstance(channels, list) or not all(isinstance(c, dict) for c in channels):
            raise ChannelFinderError(f"ChannelFinder at {url} answered {type(channels).__name__} JSON, "
                                     f"not a list of channels (starts {body[:80]!r})")
        return channels


def properties_of(channel: dict[str, Any]) -> dict[str, str]:
    """A channel's properties as ``{name: value}``."""
    props = channel.get("properties") or []
    return {str(p["name"]): p.get("value", "") for p in props if isinstance(p, dict) and "name" in p}
