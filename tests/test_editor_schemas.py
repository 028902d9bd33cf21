"""The JSON Schemas editors use (``iochost schema``): never stricter than iochost, and still
marking a misspelt key.

Tried on material nobody wrote for the schema: the bundled examples, every kind ``iochost
new`` writes, the config.yaml blocks of iocmng 2.7.9's README (downloaded at test time),
configs generated from the config model (test_validates_starts' strategy) rewritten in
iocmng's spellings, and generated plugins-file entries in pydantic's lax forms. Each is
validated both ways: what the models accept the schema accepts; a key misspelt where the
models are closed is refused by both.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from iochost.api.bodies import PluginRequest
from iochost.config import PluginConfig
from iochost.config.pv_fields import TYPE_ALIASES
from iochost.editor_schemas import SCHEMA_NAMES, json_schema, modeline, schema_url
from iochost.plugins_file import load_plugins_file
from iochost.scaffold import scaffold_plugin
from iochost.scaffold.plugin_names import KINDS
from iocmng_material import code_blocks, is_config, sdist_file, sdist_for_tests
from test_validates_starts import configs

ROOT = Path(__file__).resolve().parents[1]
CONFIG = jsonschema.Draft202012Validator(json_schema("config"))
PLUGINS_FILE = jsonschema.Draft202012Validator(json_schema("plugins-file"))
PROPERTIES = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                      phases=[Phase.explicit, Phase.generate, Phase.shrink],
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
# every key a config.yaml's closed mappings know: a misspelling must not land on one
KNOWN_KEYS = {"arguments", "triggered", *PluginConfig.model_fields,
              *(key for model in ("PVDef", "LimitAlarm", "StateAlarm")
                for key in json_schema("config")["$defs"][model]["properties"])}


def model_accepts(document: Any) -> bool:
    try:
        PluginConfig.model_validate(document)
    except (ValidationError, ValueError):
        return False
    return True


def schema_errors(validator: jsonschema.Draft202012Validator, document: Any) -> list[str]:
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(document)]


def as_read(document: Any) -> Any:
    """``document`` as a YAML file of it reads back (what both the models and an editor see)."""
    return yaml.safe_load(yaml.safe_dump(document, sort_keys=False))


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_iochost_schema_prints_a_valid_schema_the_site_publishes(name: str) -> None:
    printed = subprocess.run([sys.executable, "-m", "iochost", "schema", name], capture_output=True, text=True,
                             check=True).stdout
    schema = json.loads(printed)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$id"] == schema_url(name)
    assert json.loads((ROOT / "docs" / "schemas" / f"{name}.schema.json").read_text()) == schema


def test_the_default_is_the_config_schema() -> None:
    printed = subprocess.run([sys.executable, "-m", "iochost", "schema"], capture_output=True, text=True, check=True)
    assert json.loads(printed.stdout)["$id"] == schema_url("config")


@pytest.mark.parametrize("config", sorted(ROOT.glob("plugins-example/*/config.yaml")), ids=lambda p: p.parent.name)
def test_every_bundled_example_validates(config: Path) -> None:
    document = yaml.safe_load(config.read_text())
    assert model_accepts(document)
    assert schema_errors(CONFIG, document) == []


@pytest.mark.parametrize("kind", KINDS)
def test_iochost_new_names_the_schema_and_what_it_writes_validates(kind: str, tmp_path: Path) -> None:
    scaffold_plugin("scaffolded", kind, tmp_path / "p")
    text = (tmp_path / "p" / "config.yaml").read_text()
    assert text.splitlines()[0] == modeline("config")
    assert schema_url("config") in text.splitlines()[0]
    assert schema_errors(CONFIG, yaml.safe_load(text)) == []


def test_iocmngs_readme_configs_validate_as_iochost_reads_them(pytestconfig: pytest.Config) -> None:
    """Every config.yaml block of iocmng 2.7.9's README: accepted by the schema exactly when
    iochost accepts it (the README's blocks are all meant to be valid)."""
    readme = sdist_file(sdist_for_tests(pytestconfig), "README.md")
    blocks = [block for block in code_blocks(readme) if is_config(block)]
    assert len(blocks) >= 2, "iocmng's README has fewer config.yaml blocks than it had (two)"
    for block in blocks:
        document = yaml.safe_load(block.text)
        assert model_accepts(document), f"README line {block.line}"
        assert schema_errors(CONFIG, document) == [], f"README line {block.line}"


# -- generated configs, rewritten in iocmng's spellings ---------------------------------------------
def _case(draw: st.DrawFn, word: str) -> str:
    return draw(st.sampled_from([word, word.upper(), word.capitalize(), f" {word} "]))


@st.composite
def iocmng_spelt(draw: st.DrawFn) -> Any:
    """A generated config, some of its words spelt as iocmng takes them: type aliases and any
    case, ``arguments:`` for ``pvs:``, ``triggered: true``, empty sections as nothing."""
    _, config = draw(configs())
    config = as_read(config)
    aliases = {canonical: [alias for alias, to in TYPE_ALIASES.items() if to == canonical] for canonical in
               set(TYPE_ALIASES.values())}
    for group in config["pvs"].values():
        for pv in (group if isinstance(group, list) else group.values()):
            if "type" in pv and draw(st.booleans()):
                pv["type"] = _case(draw, draw(st.sampled_from([pv["type"], *aliases.get(pv["type"], [])])))
            for key in ("link_mode", "latch_dir"):
                if isinstance(pv.get(key), str) and draw(st.booleans()):
                    pv[key] = _case(draw, pv[key])
    parameters = config["parameters"]
    if parameters.get("mode") == "triggered" and draw(st.booleans()):
        del parameters["mode"]
        parameters["triggered"] = True
    elif "mode" in parameters and draw(st.booleans()):
        parameters["mode"] = _case(draw, parameters["mode"])
    if draw(st.booleans()):
        config["arguments"] = config.pop("pvs")
    for key in ("rules", "transforms", "rule_defaults"):
        if draw(st.booleans()):
            config[key] = None
    return config


@PROPERTIES
@given(iocmng_spelt())
def test_every_generated_config_iochost_accepts_the_schema_accepts(config: Any) -> None:
    assert model_accepts(config), config
    assert schema_errors(CONFIG, config) == [], config


def _misspell(draw: st.DrawFn, key: str) -> str:
    """``key`` with one letter doubled or dropped, or two swapped: not a key of the model."""
    at = draw(st.integers(0, len(key) - 1))
    how = draw(st.sampled_from(("double", "drop", "swap")))
    if how == "double" or len(key) < 3:
        return key[:at] + key[at] + key[at:]
    if how == "drop":
        return key[:at] + key[at + 1:]
    at = min(at, len(key) - 2)
    return key[:at] + key[at + 1] + key[at] + key[at + 2:]


@st.composite
def misspelt(draw: st.DrawFn) -> tuple[Any, str]:
    """A generated config with one key of a closed mapping misspelt: a top-level section, a
    PV's field, or an alarm field."""
    _, config = draw(configs())
    config = as_read(config)
    pvs = [pv for group in config["pvs"].values() for pv in (group if isinstance(group, list) else group.values())]
    places: list[dict[str, Any]] = [config, *pvs, *[pv["alarm"] for pv in pvs if isinstance(pv.get("alarm"), dict)
                                                    and pv.get("type") in ("float", "int", "bool")]]
    place = draw(st.sampled_from([mapping for mapping in places if any(k != "name" for k in mapping)]))
    key = draw(st.sampled_from(sorted(k for k in place if k != "name")))
    wrong = _misspell(draw, key)
    if wrong in KNOWN_KEYS or wrong in place:
        wrong = key + "_x"
    place[wrong] = place.pop(key)
    return config, wrong


@PROPERTIES
@given(misspelt())
def test_a_misspelt_key_is_refused_by_both(case: tuple[Any, str]) -> None:
    config, wrong = case
    assert not model_accepts(config), wrong
    assert schema_errors(CONFIG, config) != [], wrong


# -- the plugins file ------------------------------------------------------------------------------------
LAX_BOOLEANS = st.sampled_from([True, False, 0, 1, "yes", "No", "TRUE", "off", "on", "t", "F", "1", "0"])
ENTRY_FIELDS = {
    "git_url": st.sampled_from(["https://git.example.org/lab/plugin.git", "file:///srv/plugin.git"]),
    "branch": st.sampled_from(["main", "v1.2"]),
    "commit": st.from_regex(r"[0-9a-f]{7,40}", fullmatch=True),
    "path": st.sampled_from(["plugins/temp", "."]),
    "class_name": st.from_regex(r"[A-Z][A-Za-z0-9_]{0,12}", fullmatch=True),
    "parameters": st.dictionaries(st.from_regex(r"[a-z_]{1,8}", fullmatch=True),
                                  st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=5)),
                                  max_size=3),
    "auto_start": LAX_BOOLEANS,
    "auto_start_on_boot": st.one_of(st.none(), LAX_BOOLEANS),
    "autostart_order": st.one_of(st.integers(-5, 5), st.sampled_from(["3", "-2", 4.0])),
    "grace_period": st.one_of(st.floats(0.5, 600), st.sampled_from(["2.5", "10", 7])),
    "pat_file": st.just("/run/secrets/token"),
}


@st.composite
def entries(draw: st.DrawFn) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": draw(st.from_regex(r"[a-z][a-z0-9_-]{0,15}", fullmatch=True))}
    for key in draw(st.permutations(sorted(ENTRY_FIELDS))):
        if draw(st.booleans()):
            entry[key] = draw(ENTRY_FIELDS[key])
    if "git_url" not in entry:
        entry["local_path"] = "/opt/plugins/one"
    return entry


def _file_accepts(entry: dict[str, Any], tmp: Path) -> bool:
    """The daemon's reading of a plugins file holding ``entry`` (its pat_file made to exist)."""
    if "pat_file" in entry:
        (tmp / "token").write_text("secret")
        entry = {**entry, "pat_file": str(tmp / "token")}
    (tmp / "plugins.yaml").write_text(yaml.safe_dump({"plugins": [entry]}))
    read = load_plugins_file(tmp / "plugins.yaml")
    return not read.problems and len(read.requests) == 1


@PROPERTIES
@given(entry=entries())
def test_every_plugins_file_entry_the_daemon_takes_the_schema_takes(entry: dict[str, Any],
                                                                    tmp_path_factory: pytest.TempPathFactory) -> None:
    entry = as_read(entry)
    assert _file_accepts(entry, tmp_path_factory.mktemp("pf")), entry
    assert schema_errors(PLUGINS_FILE, {"plugins": [entry]}) == [], entry


@PROPERTIES
@given(entry=entries(), data=st.data())
def test_a_misspelt_plugins_file_key_is_refused_by_both(entry: dict[str, Any], data: st.DataObject,
                                                        tmp_path_factory: pytest.TempPathFactory) -> None:
    entry = as_read(entry)
    key = data.draw(st.sampled_from(sorted(entry)))
    wrong = _misspell(data.draw, key)
    if wrong in {*PluginRequest.model_fields, "pat_file"}:
        wrong = key + "_x"
    entry[wrong] = entry.pop(key)
    assert not _file_accepts(entry, tmp_path_factory.mktemp("pf")), wrong
    assert schema_errors(PLUGINS_FILE, {"plugins": [entry]}) != [], wrong


def test_a_plugins_file_without_its_plugins_list_is_refused() -> None:
    assert schema_errors(PLUGINS_FILE, {"plugin": []}) != []
    assert schema_errors(PLUGINS_FILE, {"plugins": []}) == []
