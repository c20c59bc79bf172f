"""`ravedata prep --augment` end to end, through the real CLI in subprocesses:
determinism across --jobs, manifest records that replay, a third-party plugin
(the examples/ package, pip-installed into a temp folder) used by --augment-config,
bad plans / bad plugins handled without a traceback, re-runs after a plugin
upgrade or edit (only the affected variants), failed variants retried, and a
plugin that kills its worker."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import lmdb
import numpy as np
import pytest
import soundfile as sf

from rave_data.augment import Chain
from tests.audio import clicks, concat, noise, sine, write
from tests.rave_data.plugin_dists import make_dist, pip_install, write_project

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ARGS = ["--sr", "22050", "--num-signal", "8192"]

pytestmark = pytest.mark.slow


def ravedata(*args: str, env_extra: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run([str(BIN / "ravedata"), *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("in")
    write(d / "voice.wav", concat(sine(1.5, 22050, 220.0), noise(1.0, 22050, seed=1)), 22050)
    write(d / "sub" / "drums.flac", concat(clicks(1.5, 22050, channels=2), sine(1.0, 22050, 440.0, channels=2)), 22050)
    write(d / "tone.wav", sine(2.0, 44100, 330.0), 44100)
    return d


def lmdb_items(path: Path) -> list[tuple[bytes, bytes]]:
    env = lmdb.open(str(path), readonly=True, lock=False, subdir=True)
    try:
        with env.begin() as txn:
            return list(txn.cursor())
    finally:
        env.close()


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines() if line.strip()]


def audio_files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted((out / "audio").rglob("*")) if p.is_file()}


def only(src: Path, name: str, where: Path) -> Path:
    """A fresh input folder holding just ``src/name`` (prep takes folders)."""
    (where / "in").mkdir(parents=True)
    return Path(shutil.copy(src / name, where / "in" / name)).parent


@pytest.fixture(scope="module")
def jobs_runs(src, tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("jobs")
    outs = []
    for jobs in (1, 2):
        out = base / f"out{jobs}"
        r = ravedata("prep", src, out, *ARGS, "--augment", "--variants", "2", "--seed", "7", "--jobs", jobs, "--quiet")
        assert r.returncode == 0, r.stderr
        outs.append(out)
    return outs[0], outs[1]


def test_same_seed_gives_byte_identical_outputs_whatever_jobs(jobs_runs):
    one, two = jobs_runs
    files = audio_files(one)
    assert files == audio_files(two)
    assert "audio/voice.aug01.wav" in files and "audio/sub/drums.flac.aug02.wav" in files
    assert lmdb_items(one) == lmdb_items(two)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("wall_seconds",)} for r in rows]  # noqa: E731
    assert strip(manifest(one)) == strip(manifest(two))


def test_manifest_records_each_variant_chain(jobs_runs):
    out = jobs_runs[0]
    rows = manifest(out)
    variants = [r for r in rows if r["kind"] == "augmented"]
    assert len(variants) == 3 * 2 and {r["variant"] for r in variants} == {1, 2}
    originals = {r["source"]: r for r in rows if r["kind"] == "original"}
    assert len(originals) == 3 and all(r["augment"] is None for r in originals.values())
    for r in variants:
        assert r["augment"] and all({"name", "plugin", "params"} <= set(s) for s in r["augment"])
        assert r["keys"] and r["seconds_out"] > 0


def test_another_seed_gives_other_variants(src, tmp_path, jobs_runs):
    out = tmp_path / "out"
    r = ravedata("prep", src, out, *ARGS, "--augment", "--variants", "2", "--seed", "8", "--quiet")
    assert r.returncode == 0, r.stderr
    chains = lambda o: [m["augment"] for m in manifest(o) if m["kind"] == "augmented"]  # noqa: E731
    assert chains(out) != chains(jobs_runs[0])
    # the originals do not depend on the seed
    assert (out / "audio" / "voice.wav").read_bytes() == (jobs_runs[0] / "audio" / "voice.wav").read_bytes()


@pytest.fixture(scope="module")
def example_site(tmp_path_factory) -> Path:
    """examples/custom-augmenter pip-installed into a folder of its own (the shared venv is untouched)."""
    base = tmp_path_factory.mktemp("example")
    pkg = shutil.copytree(ROOT / "examples" / "custom-augmenter", base / "pkg")  # builds never touch the repo
    site = base / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(pkg)], check=True, timeout=300, capture_output=True)
    return site


def test_example_package_is_listed_and_used_by_prep(src, tmp_path, example_site):
    env = {"PYTHONPATH": str(example_site)}
    listed = json.loads(ravedata("plugins", "--json", env_extra=env).stdout)
    [bitcrush] = [a for a in listed["augmenters"] if a["name"] == "bitcrush"]
    assert (bitcrush["plugin"], bitcrush["package"], bitcrush["version"]) == ("bitcrush", "ravedata-bitcrush", "0.1.0")
    assert bitcrush["params"][0]["default"] == [6, 12] and bitcrush["params"][0]["type"] == "int"

    plan = tmp_path / "plan.toml"
    plan.write_text('[[steps]]\nname = "bitcrush"\nprobability = 1.0\nparams = { bits = 4 }\n')
    out = tmp_path / "out"
    r = ravedata("prep", only(src, "voice.wav", tmp_path), out, *ARGS, "--augment", "--variants", "1",
                 "--augment-config", plan, "--quiet", env_extra=env)
    assert r.returncode == 0, r.stderr
    [variant] = [m for m in manifest(out) if m["kind"] == "augmented"]
    assert variant["augment"] == [{"name": "bitcrush", "plugin": "bitcrush", "params": {"bits": 4}}]
    y, _ = sf.read(out / variant["output"], dtype="float32")
    assert len(np.unique(np.round(y, 4))) <= 2**4 + 1  # really quantised to 4 bits

    # Without the package on the path the same plan is refused, listing what is installed.
    r = ravedata("prep", tmp_path / "in", tmp_path / "out2", *ARGS, "--augment", "--augment-config", plan)
    assert r.returncode == 2 and "unknown augmenter 'bitcrush'" in r.stderr and "pitch_shift" in r.stderr
    assert "Traceback" not in r.stderr


def test_first_party_plugin_is_used_by_prep_and_its_record_replays(src, tmp_path):
    # Linear steps only: replaying them on the 16-bit original must give the
    # variant up to quantisation. (Rubber Band pitch/stretch replay bit-exactly
    # on the same float input - see test_augment.py - but react to a 1-LSB
    # change of input like any adaptive phase vocoder, so they are not used here.)
    plan = tmp_path / "plan.toml"
    plan.write_text('[[steps]]\nname = "room"\nparams = { rt60 = [0.3, 0.5] }\n\n'
                    '[[steps]]\nname = "eq"\n\n[[steps]]\nname = "gain"\nparams = { db = [-6.0, -3.0] }\n')
    out = tmp_path / "out"
    r = ravedata("prep", only(src, "tone.wav", tmp_path), out, *ARGS, "--augment", "--variants", "1",
                 "--augment-config", plan, "--quiet")
    assert r.returncode == 0, r.stderr
    rows = manifest(out)
    [original] = [m for m in rows if m["kind"] == "original"]
    [variant] = [m for m in rows if m["kind"] == "augmented"]
    assert [s["name"] for s in variant["augment"]] == ["room", "eq", "gain"]
    assert variant["augment"][0]["plugin"] == "roomverb" and 0.3 <= variant["augment"][0]["params"]["rt60"] <= 0.5
    x, sr = sf.read(out / original["output"], dtype="float32", always_2d=True)
    y, _ = sf.read(out / variant["output"], dtype="float32", always_2d=True)
    replay = Chain.from_record(variant["augment"]).apply(np.ascontiguousarray(x.T), sr)
    assert replay.shape == y.T.shape
    assert np.abs(replay - y.T).max() < 4 / 32768


def test_a_misbehaving_plugin_costs_only_its_variants(src, tmp_path):
    site = tmp_path / "site"
    make_dist(site, "rd-mono", "mono", "rd_mono", """
        from rave_data import hookimpl
        from rave_data.augment import Augmenter
        class Mono(Augmenter):
            name = "tomono"
            def apply(self, audio, sr):
                return audio[:1] if audio.shape[1] > 30000 else audio
        @hookimpl
        def register_augmenters(register):
            register(Mono)
    """, version="0.1")
    # and a plugin that cannot even be imported: named, and the run goes on
    make_dist(site, "rd-broken", "broken", "rd_broken", "import not_installed_anywhere\n", version="0.1")
    plan = tmp_path / "plan.toml"
    plan.write_text('[[steps]]\nname = "tomono"\n')
    out = tmp_path / "out"
    # stereo output: tone.wav (2 s at 22.05 kHz = 44100 frames) breaks the plugin, the shorter ones do not.
    r = ravedata("prep", src, out, *ARGS, "--channels", "2", "--augment", "--variants", "1",
                 "--augment-config", plan, "--seed", "1", env_extra={"PYTHONPATH": str(site)})
    assert r.returncode == 0, r.stderr
    assert "augmenter 'tomono' (plugin 'mono'): changed the channel count from 2 to 1" in r.stderr + r.stdout
    assert "plugin 'broken' (rd-broken 0.1) disabled: ModuleNotFoundError" in r.stderr
    assert "Traceback" not in r.stderr
    rows = manifest(out)
    assert {m["source"] for m in rows if m["kind"] == "original"} == {"voice.wav", "sub/drums.flac", "tone.wav"}
    assert "tone.wav" not in {m["source"] for m in rows if m["kind"] == "augmented"}


# --- re-runs after plugin changes, failures, crashes ------------------------------

CRUSH = """
import os
import numpy as np
from rave_data import hookimpl
from rave_data.augment import Augmenter, Param

STEP_SCALE = {scale}

class Crush(Augmenter):
    name = "crush"
    params = (Param("bits", (4, 8), kind=int, lo=2, hi=16),)
    def apply(self, audio, sr, bits=8):
        if os.environ.get("CRUSH_FAIL") and bits >= 6:
            raise ValueError(f"cannot crush to {{bits}} bits")
        if os.environ.get("CRUSH_DIE") and audio.shape[1] > 30000:
            os._exit(3)  # as a segfaulting extension would: no exception, the process is gone
        step = 2.0 ** (1 - bits) * STEP_SCALE
        return (np.round(audio / step) * step).astype(np.float32)

@hookimpl
def register_augmenters(register):
    register(Crush)
"""
CRUSH_PLAN = '[[steps]]\nname = "crush"\nprobability = 0.5\n\n[[steps]]\nname = "gain"\nparams = { db = [-3.0, -1.0] }\n'


def crush_project(where: Path, version: str, scale: float) -> Path:
    return write_project(where, "ravedata-crush", "crush", "rd_crush", CRUSH.format(scale=scale), version=version)


def state(out: Path) -> dict[str, tuple[int, bytes]]:
    """Every output file: (mtime_ns, bytes)."""
    return {p.relative_to(out).as_posix(): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted((out / "audio").rglob("*")) if p.is_file()}


def consistent(out: Path) -> None:
    """Every manifest key is in the LMDB and nothing else is."""
    keys = sorted(k.encode() for m in manifest(out) for k in m["keys"])
    assert sorted(k for k, _ in lmdb_items(out)) == keys


def crush_prep(in_dir: Path, out: Path, plan: Path, env: dict[str, str], *extra: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    r = ravedata("prep", in_dir, out, *ARGS, "--augment", "--variants", "3", "--seed", "1",
                 "--augment-config", plan, *extra, env_extra=env)
    assert r.returncode == 0, r.stderr
    return r, json.loads((out / "report.json").read_text())


def test_an_upgraded_plugin_reruns_only_the_variants_it_made(src, tmp_path):
    site = tmp_path / "site"
    pip_install(site, crush_project(tmp_path / "v1", "0.1.0", 1.0))
    plan = tmp_path / "plan.toml"
    plan.write_text(CRUSH_PLAN)
    env = {"PYTHONPATH": str(site)}
    in_dir, out = only(src, "voice.wav", tmp_path), tmp_path / "out"
    crush_prep(in_dir, out, plan, env)
    lines = {m["output"]: m for m in manifest(out)}
    used = sorted(m["variant"] for m in lines.values() if "crush" in (m.get("plugins") or {}))
    assert 0 < len(used) < 3, used  # seed 1 draws crush for some variants only
    for m in lines.values():
        if m["kind"] == "augmented":
            assert m["plugins"]["builtin.gain"]["package"] == "ravedata"
            if m["variant"] in used:
                assert m["plugins"]["crush"] == {"package": "ravedata-crush", "version": "0.1.0", "hash": None}
    before, keys_before = state(out), {m["output"]: m["keys"] for m in lines.values()}

    _, again = crush_prep(in_dir, out, plan, env)
    assert again["run"]["unchanged"] == 1 and again["run"]["rerun"] == [] and state(out) == before

    pip_install(site, crush_project(tmp_path / "v2", "0.2.0", 2.0))  # new version, other output
    r, report = crush_prep(in_dir, out, plan, env)
    [rerun] = report["run"]["rerun"]
    assert rerun["source"] == "voice.wav" and rerun["variants"] == used
    assert all("plugin 'crush' changed: ravedata-crush 0.1.0 -> ravedata-crush 0.2.0" in w for w in rerun["why"])
    assert "made again: voice.wav (variant(s) " in r.stdout
    after = state(out)
    assert after.keys() == before.keys()
    for name, (mtime, data) in before.items():
        variant = lines[name]["variant"]
        if variant in used:
            assert after[name][1] != data, name  # made again with the new code
        else:
            assert after[name] == (mtime, data), name  # not touched: same file, same mtime
    now = {m["output"]: m for m in manifest(out)}
    for name, m in now.items():
        if m["variant"] in used:
            assert m["plugins"]["crush"]["version"] == "0.2.0"
        else:
            assert m["keys"] == keys_before[name]
    consistent(out)
    _, last = crush_prep(in_dir, out, plan, env)
    assert last["run"]["unchanged"] == 1 and not last["run"]["rerun"]


def test_an_edited_editable_plugin_reruns_its_variants(src, tmp_path):
    project = crush_project(tmp_path / "proj", "0.1.0", 1.0)
    site = tmp_path / "site"
    pip_install(site, project, editable=True)
    plan = tmp_path / "plan.toml"
    plan.write_text(CRUSH_PLAN)
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(project)])}
    in_dir, out = only(src, "voice.wav", tmp_path), tmp_path / "out"
    crush_prep(in_dir, out, plan, env)
    hashes = {m["variant"]: m["plugins"]["crush"]["hash"] for m in manifest(out) if "crush" in (m.get("plugins") or {})}
    assert hashes and all(h and len(h) == 12 for h in hashes.values())

    (project / "rd_crush.py").write_text(CRUSH.format(scale=2.0))  # same version, new code
    _, report = crush_prep(in_dir, out, plan, env)
    [rerun] = report["run"]["rerun"]
    assert rerun["variants"] == sorted(hashes)
    assert all("code changed (ravedata-crush 0.1.0, modules hash " in w for w in rerun["why"])
    assert all(m["plugins"]["crush"]["hash"] not in hashes.values()
               for m in manifest(out) if "crush" in (m.get("plugins") or {}))
    consistent(out)


def test_failed_variants_are_recorded_with_their_chain_and_retried(src, tmp_path):
    site = tmp_path / "site"
    pip_install(site, crush_project(tmp_path / "v1", "0.1.0", 1.0))
    plan = tmp_path / "plan.toml"
    plan.write_text(CRUSH_PLAN)
    in_dir, out = only(src, "voice.wav", tmp_path), tmp_path / "out"
    r, report = crush_prep(in_dir, out, plan, {"PYTHONPATH": str(site), "CRUSH_FAIL": "1"}, "--traceback")
    failed = report["run"]["failed_variants"]
    assert failed, "seed 1 draws crush with bits >= 6 for at least one variant"
    for f in failed:
        assert f["source"] == "voice.wav" and (f["augmenter"], f["plugin"]) == ("crush", "crush")
        step = f["chain"][f["step"]]
        assert step["name"] == "crush" and step["params"]["bits"] >= 6
        assert "ValueError: cannot crush to" in f["traceback"] and "rd_crush.py" in f["traceback"]
        assert f"voice.wav: variant {f['variant']}: augmenter 'crush' (plugin 'crush'): raised ValueError" in r.stderr
    assert "sampled chain:" in r.stderr and "<- failed here" in r.stderr and "Traceback (most recent call last)" in r.stderr
    written = {m["variant"] for m in manifest(out) if m["kind"] == "augmented"}
    assert written.isdisjoint(f["variant"] for f in failed)

    _, again = crush_prep(in_dir, out, plan, {"PYTHONPATH": str(site)})  # the cause is gone
    [rerun] = again["run"]["rerun"]
    assert rerun["variants"] == sorted(f["variant"] for f in failed)
    assert all("failed last run: augmenter 'crush' (plugin 'crush'): raised ValueError" in w for w in rerun["why"])
    assert not again["run"]["failed_variants"]
    assert {m["variant"] for m in manifest(out) if m["kind"] == "augmented"} == {1, 2, 3}
    consistent(out)


def test_a_plugin_killing_its_worker_is_named_and_leaves_no_file(src, tmp_path):
    site = tmp_path / "site"
    pip_install(site, crush_project(tmp_path / "v1", "0.1.0", 1.0))
    plan = tmp_path / "plan.toml"
    plan.write_text('[[steps]]\nname = "crush"\nparams = { bits = 7 }\n')
    in_dir = only(src, "voice.wav", tmp_path)  # 2.5 s: the plugin dies on it
    write(in_dir / "short.wav", sine(1.0, 22050, 330.0), 22050)  # 1 s: the plugin works
    out = tmp_path / "out"
    r = ravedata("prep", in_dir, out, *ARGS, "--augment", "--variants", "2", "--augment-config", plan,
                 "--jobs", "2", env_extra={"PYTHONPATH": str(site), "CRUSH_DIE": "1"})
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["run"]["skipped"] == [{"source": "voice.wav", "reason":
        "worker process died in augmenter 'crush' (plugin 'crush') while writing variant 1"}]
    [failure] = report["run"]["failed_variants"]
    assert failure["source"] == "voice.wav" and failure["chain"] == [{"name": "crush", "plugin": "crush", "params": {"bits": 7}}]
    assert "decoder" not in r.stdout + r.stderr
    left = sorted(p.name for p in (out / "audio").iterdir())
    assert left == ["short.aug01.wav", "short.aug02.wav", "short.wav"], left  # nothing of voice.wav, no .tmp
    assert {m["source"] for m in manifest(out)} == {"short.wav"}
    consistent(out)
