"""The beamline values.yaml (``--beamline-config``): read once by the daemon, checked, handed to workers.

iocmng 2.0 gave every plugin the parsed beamline file as ``beamline_config`` and built ophyd
devices from its ``epicsConfiguration.iocs``. The daemon reads it at startup so a broken file
stops ``iochost serve`` with the file and line, instead of failing in every worker later.
Only the shape the device index relies on is checked; every other key is the beamline's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_MAPPING, _SEQUENCE = yaml.MappingNode, yaml.SequenceNode


class BeamlineConfigError(ValueError):
    """A beamline file that cannot be used: the message names the file and line."""


def _where(path: Path, node: yaml.Node) -> str:
    return f"{path}:{node.start_mark.line + 1}"


def _value(mapping: yaml.MappingNode, key: str) -> yaml.Node | None:
    for key_node, value_node in mapping.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            return value_node
    return None


def _expect(path: Path, node: yaml.Node, kind: type, what: str) -> None:
    if not isinstance(node, kind):
        expected = "a mapping" if kind is _MAPPING else "a list"
        raise BeamlineConfigError(f"{_where(path, node)}: {what} must be {expected}")


def _check_shape(path: Path, root: yaml.Node) -> None:
    """The sections the device index walks have the types it walks them as."""
    _expect(path, root, _MAPPING, "the beamline file's top level")
    assert isinstance(root, _MAPPING)
    defaults = _value(root, "iocDefaults")
    if defaults is not None and not (isinstance(defaults, yaml.ScalarNode) and defaults.tag.endswith(":null")):
        _expect(path, defaults, _MAPPING, "iocDefaults")
    epics = _value(root, "epicsConfiguration")
    if epics is None or (isinstance(epics, yaml.ScalarNode) and epics.tag.endswith(":null")):
        return
    _expect(path, epics, _MAPPING, "epicsConfiguration")
    assert isinstance(epics, _MAPPING)
    iocs = _value(epics, "iocs")
    if iocs is None or (isinstance(iocs, yaml.ScalarNode) and iocs.tag.endswith(":null")):
        return
    _expect(path, iocs, _SEQUENCE, "epicsConfiguration.iocs")
    assert isinstance(iocs, _SEQUENCE)
    for index, ioc in enumerate(iocs.value):
        _expect(path, ioc, _MAPPING, f"epicsConfiguration.iocs[{index}]")
        assert isinstance(ioc, _MAPPING)
        devices = _value(ioc, "devices")
        if devices is None or (isinstance(devices, yaml.ScalarNode) and devices.tag.endswith(":null")):
            continue
        _expect(path, devices, _SEQUENCE, f"epicsConfiguration.iocs[{index}].devices")
        assert isinstance(devices, _SEQUENCE)
        for number, device in enumerate(devices.value):
            _expect(path, device, _MAPPING, f"epicsConfiguration.iocs[{index}].devices[{number}]")


def load_beamline_config(path: Path) -> dict[str, Any]:
    """The parsed mapping of ``path``; BeamlineConfigError (file and line) if it is unreadable,
    not YAML, not a mapping, or its ``epicsConfiguration.iocs`` is not a list of mappings."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise BeamlineConfigError(f"{path}: cannot be read: {reason}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise BeamlineConfigError(f"{path}{line}: not valid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise BeamlineConfigError(f"{path}: not valid YAML: {exc}") from None
    if root is None:
        raise BeamlineConfigError(f"{path}:1: empty; a beamline file is a mapping (values.yaml)")
    _check_shape(Path(path), root)
    assert isinstance(data, dict) and isinstance(root, _MAPPING)
    for key_node, _ in root.value:  # the mapping goes to workers as JSON: keys are names
        if not (isinstance(key_node, yaml.ScalarNode) and key_node.tag.endswith((":str", ":merge"))):
            raise BeamlineConfigError(f"{_where(Path(path), key_node)}: top-level key "
                                      f"{getattr(key_node, 'value', '?')!r} is not a string")
    return data


@dataclass(frozen=True)
class DeviceSpec:
    """What DeviceFactory.create_device needs for one device of the beamline file."""

    devgroup: str
    devtype: str | None
    prefix: str
    name: str
    config: dict[str, Any] = field(default_factory=dict)


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``, nested mappings merged (iocmng's ``deep_merge_dicts``)."""
    result = dict(base)
    for key, value in override.items():
        if isinstance(result.get(key), Mapping) and isinstance(value, Mapping):
            result[key] = _deep_merge(result[key], value)
        else:
            result[key] = value
    return result


def build_index(beamline: Mapping[str, Any]) -> dict[str, DeviceSpec]:
    """Device key -> how to create it, from ``epicsConfiguration.iocs`` (no connections)."""
    defaults = beamline.get("iocDefaults") or {}
    iocs = (beamline.get("epicsConfiguration") or {}).get("iocs") or []
    index: dict[str, DeviceSpec] = {}
    for raw in iocs:
        if not isinstance(raw, Mapping) or not raw.get("name"):
            continue
        ioc_name = str(raw["name"])
        template = defaults.get(raw.get("template", "")) if isinstance(defaults, Mapping) else None
        ioc = _deep_merge(template, raw) if isinstance(template, Mapping) else dict(raw)
        if ioc.get("disable", False) or not ioc.get("devgroup"):
            continue
        devgroup, devtype = str(ioc["devgroup"]), ioc.get("devtype")
        ioc_prefix = str(ioc.get("iocprefix", ""))
        devices = ioc.get("devices") or []
        if not devices:
            index[ioc_name] = DeviceSpec(devgroup, devtype, ioc_prefix, ioc_name, ioc)
            continue
        for device in devices:
            if not isinstance(device, Mapping) or not device.get("name"):
                continue
            device_name = str(device["name"])
            if "iocroot" in ioc:
                prefix = f"{ioc_prefix}:{ioc['iocroot']}:{device_name}"
            else:
                prefix = f"{ioc_prefix}:{device_name}"
            config = {**ioc, "iocname": ioc_name, **device}
            key = device_name if device_name not in index else f"{ioc_name}_{device_name}"
            index[key] = DeviceSpec(devgroup, devtype, prefix, device_name, config)
    return index
