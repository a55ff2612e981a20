"""The plugin contract: documented hooks, entry-point loading, disabling, the test kit."""

import inspect
import subprocess
import sys

import pytest

import persona_sdk.hookspecs as hookspecs
from persona_sdk import Persona, hookimpl
from persona_sdk.errors import PluginError
from persona_sdk.plugins import Registry, make_plugin_manager, plugin_info
from persona_sdk.testing import check_plugin, plugin_problems

BUILTINS = {
    "persona_strategies", "persona_enrichers_campaign", "persona_enrichers_device",
    "persona_enrichers_country", "persona_enrichers_localtime",
}


def spec_functions():
    return {n: f for n, f in vars(hookspecs).items() if n.startswith("persona_") and callable(f)}


@pytest.mark.parametrize("name", sorted(spec_functions()))
def test_every_hook_is_documented_with_its_signature(name):
    fn = spec_functions()[name]
    doc = inspect.getdoc(fn) or ""
    assert len(doc) > 60, f"{name} needs a docstring that explains the contract"
    sig = inspect.signature(fn)
    for param in sig.parameters.values():
        assert param.annotation is not inspect.Parameter.empty, f"{name}({param.name}) is untyped"
    assert sig.return_annotation is not inspect.Signature.empty
    assert hasattr(fn, "persona_sdk_spec"), f"{name} is not marked as a hookspec"


def test_the_contract_covers_what_adapters_need():
    names = set(spec_functions())
    assert {
        "persona_register_conditions", "persona_register_enrichers", "persona_register_strategies",
        "persona_register_profile_sources", "persona_register_sinks", "persona_consent_changed",
        "persona_segment_entered", "persona_segment_exited", "persona_erase", "persona_export",
        "persona_check_config", "persona_configure",
    } <= names


def test_builtins_load_through_the_entry_point_group():
    pm = make_plugin_manager(disabled=[])
    infos = {i.name: i for i in plugin_info(pm)}
    assert BUILTINS <= set(infos)
    assert infos["persona_strategies"].distribution == "persona-sdk"
    assert "persona_register_strategies" in infos["persona_strategies"].hooks


def test_the_environment_variable_disables_chosen_plugins(monkeypatch):
    monkeypatch.setenv("PERSONA_DISABLE_PLUGINS", "persona_enrichers_device, persona_enrichers_country")
    pm = make_plugin_manager()
    names = {i.name for i in plugin_info(pm)}
    assert "persona_enrichers_device" not in names and "persona_enrichers_campaign" in names
    persona = Persona(plugin_manager=pm)
    ctx = persona.context(__import__("persona_sdk").RequestInfo.build(
        "/", headers={"user-agent": "Mozilla/5.0 (iPhone)", "cf-ipcountry": "FR"}))
    assert "device" not in ctx and "country" not in ctx and "utm" in ctx


def test_disabling_the_strategies_is_reported_by_check():
    persona = Persona(plugin_manager=make_plugin_manager(disabled=["persona_strategies"]))
    (problem,) = [m for m in persona.check() if m.id == "persona.E001"]
    assert "PERSONA_DISABLE_PLUGINS" in problem.hint


class GoodPlugin:
    @hookimpl
    def persona_register_conditions(self, register):
        register("weekend_only", lambda arg, where: (lambda s: s.context.get("weekend") is arg),
                 doc="true on weekends")

    @hookimpl
    def persona_segment_entered(self, profile, segment):
        pass


def test_check_plugin_accepts_a_correct_plugin():
    assert plugin_problems(GoodPlugin()) == []
    check_plugin(GoodPlugin())


def test_check_plugin_reports_misspelled_hooks_and_wrong_arguments():
    class Bad:
        @hookimpl
        def persona_register_strategy(self, register):  # missing "ies"
            pass

        @hookimpl
        def persona_exposure(self, profile, decision, channel, extra):
            pass

    problems = plugin_problems(Bad())
    assert any("persona_register_strategy: no such hook (did you mean persona_register_strategies?)" in p
               for p in problems)
    assert any("persona_exposure: argument(s) extra" in p for p in problems)
    with pytest.raises(pytest.fail.Exception):
        check_plugin(Bad())


def test_check_plugin_reports_invalid_registrations():
    class Dup:
        @hookimpl
        def persona_register_conditions(self, register):
            register("eq", lambda arg, where: (lambda s: True))

    (problem,) = plugin_problems(Dup())
    assert "registering the plugin failed: PluginError" in problem


def test_two_plugins_registering_the_same_name_is_an_error():
    class Strat:
        name = "priority"

        def decide(self, slot, subject):
            raise AssertionError

    class P:
        @hookimpl
        def persona_register_strategies(self, register):
            register(Strat())

    with pytest.raises(PluginError, match="two plugins register a strategy named 'priority'"):
        Registry.collect(make_plugin_manager(plugins=[P()]))


def test_a_custom_condition_is_usable_in_rules(make_persona):
    persona = make_persona(
        {"segments": {"weekenders": {"rule": {"$weekend_only": True}}}}, plugins=[GoodPlugin()]
    )
    subject = persona.subject(None, {"weekend": True})
    assert persona.segments.test("weekenders", subject)


def test_register_plugin_fixture_unregisters_after_the_test(persona_pm, register_plugin):
    plugin = register_plugin(GoodPlugin())
    assert persona_pm.is_registered(plugin)


def test_the_core_never_imports_django():
    code = (
        "import sys; sys.modules['django'] = None\n"
        "import persona_sdk, persona_sdk.cli, persona_sdk.testing, persona_strategies, persona_enrichers.device\n"
        "from persona_sdk import Persona; Persona()\n"
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_a_plugin_that_fails_to_import_is_named_with_a_way_out(tmp_path, monkeypatch):
    dist = tmp_path / "broken_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[persona_sdk]\nbroken_thing = no_such_module_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match=r"'broken_thing'.*PERSONA_DISABLE_PLUGINS=broken_thing"):
        make_plugin_manager()
    monkeypatch.setenv("PERSONA_DISABLE_PLUGINS", "broken_thing")
    assert "broken_thing" not in {i.name for i in plugin_info(make_plugin_manager())}
