"""The plugin system through real entry points: fake distributions on sys.path
(a dist-info folder with entry_points.txt, exactly what pip installs), the
first-party plugin, and the `ravedata plugins` command."""
from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rave_data import hookspecs
from rave_data.augment import Chain, get_registry, parse_plan
from rave_data.plugins import BUILTIN_MODULES
from tests.rave_data.plugin_dists import make_dist, pip_install, write_project

ROOT = Path(__file__).resolve().parents[2]

GOOD = '''
import numpy as np
from rave_data import hookimpl
from rave_data.augment import Augmenter, Param

class Echo(Augmenter):
    """Add one echo."""
    name = "echo"
    params = (Param("delay_ms", (50.0, 100.0), lo=1.0, hi=1000.0),)
    def apply(self, audio, sr, delay_ms=50.0):
        d = int(sr * delay_ms / 1000)
        y = audio.copy()
        y[:, d:] += 0.5 * audio[:, :-d]
        return y

@hookimpl
def register_augmenters(register):
    register(Echo)
'''


@pytest.fixture
def site(tmp_path):
    """A folder on sys.path for fake plugins; the registry is rebuilt after."""
    sys.path.insert(0, str(tmp_path))
    importlib.invalidate_caches()
    yield tmp_path
    sys.path.remove(str(tmp_path))
    importlib.invalidate_caches()
    for name in [m for m, mod in sys.modules.items() if str(tmp_path) in str(getattr(mod, "__file__", "") or "")]:
        del sys.modules[name]
    get_registry(refresh=True)


def test_builtins_register_through_the_plugin_path():
    reg = get_registry(refresh=True)
    builtin = {p.name for p in reg.plugins if p.builtin}
    assert builtin == {f"builtin.{m}" for m in BUILTIN_MODULES}
    assert {e.plugin for e in reg.augmenters.values() if e.package == "ravedata"} == builtin
    assert {"pitch_shift", "time_stretch", "gain", "compress", "noise", "eq", "reverb", "polarity"} <= set(reg.augmenters)


def test_a_third_party_plugin_is_loaded_and_usable(site):
    make_dist(site, "ravedata-echo", "echo", "rd_echo", GOOD)
    reg = get_registry(refresh=True)
    entry = reg.get("echo")
    assert (entry.plugin, entry.package, entry.version) == ("echo", "ravedata-echo", "0.2")
    plan = parse_plan({"steps": [{"name": "echo", "params": {"delay_ms": 10.0}}]})
    x = np.zeros((1, 1000), np.float32)
    x[0, 0] = 0.5
    y = plan.sample(np.random.default_rng(0)).apply(x, 10000)
    assert y[0, 100] == pytest.approx(0.25)


def test_a_plugin_that_fails_to_import_is_named_and_others_keep_working(site):
    make_dist(site, "ravedata-broken", "broken", "rd_broken", "import not_a_module_anywhere\n")
    make_dist(site, "ravedata-echo", "echo", "rd_echo", GOOD)
    reg = get_registry(refresh=True)
    assert "echo" in reg.augmenters and "gain" in reg.augmenters
    [err] = reg.errors
    assert err.plugin == "broken" and "ravedata-broken" in err.package
    assert "ModuleNotFoundError" in err.reason and "not_a_module_anywhere" in err.reason
    with pytest.raises(ValueError, match="not loaded: broken"):
        reg.get("anything")


def test_a_hook_that_raises_disables_only_that_plugin(site):
    make_dist(site, "ravedata-raiser", "raiser", "rd_raiser", '''
        from rave_data import hookimpl
        @hookimpl
        def register_augmenters(register):
            raise RuntimeError("cannot find my model files")
    ''')
    reg = get_registry(refresh=True)
    [err] = reg.errors
    assert err.plugin == "raiser" and "cannot find my model files" in err.reason
    assert "raiser" not in {p.name for p in reg.plugins} and "gain" in reg.augmenters


@pytest.mark.parametrize("hook,needle", [
    ("def register_augmenter(register):", "unknown hook 'register_augmenter'"),  # misspelt name
    ("def register_augmenters(reg):", "PluginValidationError"),                 # wrong argument name
])
def test_a_bad_hook_definition_fails_loudly(site, hook, needle):
    make_dist(site, "ravedata-typo", "typo", "rd_typo", f"from rave_data import hookimpl\n@hookimpl\n{hook}\n    pass\n")
    [err] = get_registry(refresh=True).errors
    assert err.plugin == "typo" and needle in err.reason


def test_a_builtin_name_stays_the_builtin_and_the_plugin_keeps_its_qualified_name(site):
    make_dist(site, "ravedata-mygain", "mygain", "rd_mygain", GOOD.replace('"echo"', '"gain"'))
    reg = get_registry(refresh=True)
    assert not reg.errors and "mygain" in {p.name for p in reg.plugins}
    assert reg.get("gain").plugin == "builtin.gain" and reg.get("builtin.gain:gain").plugin == "builtin.gain"
    assert reg.get("mygain:gain").package == "ravedata-mygain"
    [note] = reg.notes
    assert "'gain' means 'builtin.gain:gain'; write 'mygain:gain'" in note


def _two(first: str, second: str, offset: float = 0.1) -> str:
    """Plugin code registering two augmenters that add a constant (``first``
    adds ``offset``, ``second`` 0.5: outputs tell which ran)."""
    return f'''
from rave_data import hookimpl
from rave_data.augment import Augmenter
class A(Augmenter):
    name = "{first}"
    def apply(self, audio, sr):
        return audio + {offset}
class B(Augmenter):
    name = "{second}"
    def apply(self, audio, sr):
        return audio + 0.5
@hookimpl
def register_augmenters(register):
    register(A)
    register(B)
'''


def test_two_plugins_with_one_name_keep_everything_and_the_plain_name_is_refused(site):
    make_dist(site, "ravedata-aa", "aa", "rd_aa", _two("echo", "only_a"))
    make_dist(site, "ravedata-bb", "bb", "rd_bb", _two("echo", "only_b", 0.2))
    reg = get_registry(refresh=True)
    assert not reg.errors and {"aa", "bb"} <= {p.name for p in reg.plugins}
    # Nothing disabled: both echoes by qualified name, each plugin's other augmenter by plain name.
    assert reg.get("aa:echo").package == "ravedata-aa" and reg.get("bb:echo").package == "ravedata-bb"
    assert reg.get("only_a").plugin == "aa" and reg.get("only_b").plugin == "bb"
    with pytest.raises(ValueError, match="augmenter name 'echo' is provided by several plugins: write one of 'aa:echo', 'bb:echo'"):
        parse_plan({"steps": [{"name": "echo"}]}, source="plan.toml")
    [note] = reg.notes
    assert "'aa:echo' or 'bb:echo'" in note
    x = np.zeros((1, 8), np.float32)
    plan = parse_plan({"steps": [{"name": "bb:echo"}, {"name": "builtin.gain:gain", "params": {"db": 0.0}}]})
    chain = plan.sample(np.random.default_rng(0))
    assert chain.to_record()[0] == {"name": "echo", "plugin": "bb", "params": {}}
    assert np.allclose(chain.apply(x, 8000), 0.2)
    # A record replays the plugin it names, whatever else provides the name.
    assert np.allclose(Chain.from_record(chain.to_record()).apply(x, 8000), 0.2)
    assert np.allclose(Chain.from_record([{"name": "echo", "plugin": "aa", "params": {}}]).apply(x, 8000), 0.1)


def test_a_plugin_registering_one_name_twice_keeps_the_first_and_its_others(site):
    make_dist(site, "ravedata-twice", "twice", "rd_twice", _two("same", "same").replace(
        "    register(B)", "    register(B)\n    register(Echo2)").replace(
        "@hookimpl", "class Echo2(A):\n    name = \"other\"\n@hookimpl"))
    reg = get_registry(refresh=True)
    assert not reg.errors
    assert reg.get("same").cls.__name__ == "A" and reg.get("other").plugin == "twice"
    [note] = reg.notes
    assert "registers augmenter 'same' twice; B ignored" in note


def test_plugin_identity_is_the_version_plus_a_module_hash_when_editable(site):
    from rave_data.plugins import identity_change, plugin_identity

    make_dist(site, "ravedata-echo", "echo", "rd_echo", GOOD)
    info = next(p for p in get_registry(refresh=True).plugins if p.name == "echo")
    assert plugin_identity(info) == {"package": "ravedata-echo", "version": "0.2", "hash": None}
    [dist_info] = site.glob("ravedata_echo-*.dist-info")
    (dist_info / "direct_url.json").write_text(json.dumps({"url": f"file://{site}", "dir_info": {"editable": True}}))
    info = next(p for p in get_registry(refresh=True).plugins if p.name == "echo")
    first = plugin_identity(info)
    assert info.editable and first["hash"] and len(first["hash"]) == 12
    old = dict(first, version="0.1")
    assert identity_change(old, first) == "ravedata-echo 0.1 -> ravedata-echo 0.2"
    assert identity_change(dict(first, hash="0" * 12), first).startswith("code changed (ravedata-echo 0.2, modules hash 000000000000 -> ")
    assert identity_change(first, None) == "no longer installed" and identity_change(first, first) is None


def test_registering_something_that_is_not_an_augmenter_is_refused(site):
    make_dist(site, "ravedata-odd", "odd", "rd_odd", '''
        from rave_data import hookimpl
        @hookimpl
        def register_augmenters(register):
            register(len)
    ''')
    [err] = get_registry(refresh=True).errors
    assert err.plugin == "odd" and "not a subclass of rave_data.augment.Augmenter" in err.reason


def test_env_var_disables_named_plugins(site, monkeypatch):
    make_dist(site, "ravedata-echo", "echo", "rd_echo", GOOD)
    monkeypatch.setenv("RAVEDATA_DISABLE_PLUGINS", "echo, builtin.reverb")
    reg = get_registry(refresh=True)
    assert "echo" not in reg.augmenters and "reverb" not in reg.augmenters and "gain" in reg.augmenters
    assert "rd_echo" not in sys.modules  # never even imported
    assert not reg.errors


def test_first_party_roomverb_plugin_is_installed_and_works():
    entry = get_registry().get("room")
    assert (entry.plugin, entry.package) == ("roomverb", "ravedata-roomverb")
    x = np.zeros((2, 48000), np.float32)
    x[:, 0] = 0.5
    chain = Chain.from_record([{"name": "room", "plugin": "roomverb",
                                "params": {"rt60": 0.5, "drr_db": 0.0, "damping": 0.5, "predelay_ms": 5.0, "seed": 3}}])
    y = chain.apply(x, 48000)
    assert y.shape == x.shape and y[0, 0] == pytest.approx(0.5, rel=1e-3)
    tail = y[:, 1:]
    # drr 0 dB: the tail carries as much energy as the direct sound.
    assert np.sum(tail[0].astype(np.float64) ** 2) == pytest.approx(0.25, rel=0.05)
    assert np.abs(tail[:, 24000:]).max() < np.abs(tail[:, :2400]).max() / 100  # decayed by rt60
    assert not np.allclose(tail[0], tail[1])  # decorrelated channels


def test_every_hook_is_documented_with_its_exact_signature():
    docs = (ROOT / "docs" / "plugins.md").read_text()
    hooks = [n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(f, "ravedata_spec")]
    assert hooks
    for name in hooks:
        sig = f"def {name}{inspect.signature(getattr(hookspecs, name))}"
        sig = re.sub(r"'", "", sig)
        assert sig in docs, f"{sig} missing from docs/plugins.md"


def run_cli(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([str(Path(sys.executable).parent / "ravedata"), *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_plugins_command_lists_everything_as_json_and_text(tmp_path):
    make_dist(tmp_path, "ravedata-broken", "broken", "rd_broken", "raise ImportError('needs libfoo')\n")
    env = {"PYTHONPATH": str(tmp_path)}
    out = run_cli("plugins", "--json", env_extra=env)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    by_name = {a["name"]: a for a in data["augmenters"]}
    pitch = by_name["pitch_shift"]
    assert pitch["plugin"] == "builtin.pitch" and pitch["package"] == "ravedata" and pitch["version"]
    semitones = next(p for p in pitch["params"] if p["name"] == "semitones")
    assert semitones["default"] == [-2.0, 2.0] and semitones["min"] == -24.0 and semitones["max"] == 24.0
    assert by_name["room"]["package"] == "ravedata-roomverb"
    assert data["errors"] == [{"plugin": "broken", "package": "ravedata-broken 0.2", "reason": "ImportError: needs libfoo"}]

    text = run_cli("plugins", env_extra=env)
    assert text.returncode == 0
    assert re.search(r"^pitch_shift  \[builtin\.pitch: ravedata \S+\]", text.stdout, re.M)
    assert "semitones (float)  default [-2, 2]  allowed [-24, 24]" in text.stdout
    assert "plugin 'broken' (ravedata-broken 0.2) disabled: ImportError: needs libfoo" in text.stderr
    assert "Traceback" not in text.stderr


def test_plugins_command_never_imports_torch_or_pedalboard():
    code = ("import sys; from typer.testing import CliRunner; from rave_data.cli.app import app;"
            "r = CliRunner().invoke(app, ['plugins']); assert r.exit_code == 0, r.output;"
            "bad = [m for m in ('torch', 'torchaudio', 'pedalboard') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_roomverb_ships_on_its_own_as_a_wheel(tmp_path):
    """plugins/ravedata-roomverb builds into a wheel declaring the ravedata entry point."""
    import zipfile

    pkg = shutil.copytree(ROOT / "plugins" / "ravedata-roomverb", tmp_path / "pkg",
                          ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(tmp_path / "dist"), str(pkg)], check=True, capture_output=True, timeout=300)
    [wheel] = (tmp_path / "dist").glob("ravedata_roomverb-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        [eps] = [n for n in names if n.endswith("entry_points.txt")]
        assert "[ravedata]\nroomverb = ravedata_roomverb.plugin" in z.read(eps).decode()
    assert {"ravedata_roomverb/plugin.py", "ravedata_roomverb/impulse.py"} <= set(names)


def test_tutorial_shows_the_example_package_verbatim():
    """docs/plugins.md builds examples/custom-augmenter: its code blocks must be those files."""
    docs = (ROOT / "docs" / "plugins.md").read_text()
    blocks = re.findall(r"```(?:python|toml)\n(.*?)```", docs, re.S)
    example = ROOT / "examples" / "custom-augmenter"
    for name in ("ravedata_bitcrush.py", "pyproject.toml", "tests/test_bitcrush.py"):
        assert (example / name).read_text() in blocks, f"{name} differs from its listing in docs/plugins.md"


def test_clashing_real_packages_through_the_cli(tmp_path):
    """Two pip-installed packages providing `echo`: `plugins` lists both by
    qualified name and warns; a plan with the plain name is refused naming both."""
    site = tmp_path / "site"
    pip_install(site, write_project(tmp_path / "aa", "ravedata-aa", "aa", "rd_aa", _two("echo", "only_a")),
                write_project(tmp_path / "bb", "ravedata-bb", "bb", "rd_bb", _two("echo", "only_b")))
    env = {"PYTHONPATH": str(site)}
    data = json.loads(run_cli("plugins", "--json", env_extra=env).stdout)
    names = {a["plan_name"]: a["package"] for a in data["augmenters"]}
    assert names["aa:echo"] == "ravedata-aa" and names["bb:echo"] == "ravedata-bb" and "echo" not in names
    assert names["only_a"] == "ravedata-aa" and names["only_b"] == "ravedata-bb" and not data["errors"]
    text = run_cli("plugins", env_extra=env)
    assert re.search(r"^aa:echo  \[aa: ravedata-aa 0\.1\.0\]", text.stdout, re.M)
    assert "a plan must write 'aa:echo' or 'bb:echo'" in text.stderr

    plan = tmp_path / "plan.toml"
    plan.write_text('[[steps]]\nname = "echo"\n')
    (tmp_path / "in").mkdir()
    import soundfile as sf
    sf.write(tmp_path / "in" / "a.wav", np.zeros((22050, 1), np.float32) + 0.1, 22050)
    r = run_cli("prep", str(tmp_path / "in"), str(tmp_path / "out"), "--augment", "--augment-config", str(plan),
                env_extra=env)
    assert r.returncode == 2 and "write one of 'aa:echo', 'bb:echo'" in r.stderr and "Traceback" not in r.stderr
