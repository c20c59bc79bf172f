"""prep's driver: start-up (what the parent process imports, when the worker
fork server starts), the order work starts and is committed in, progress."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.audio import concat, noise, silence, sine, write

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str, *args: str, name: str | None = None, tmp: Path | None = None) -> str:
    """Run ``code`` in a fresh interpreter (as a script called ``name`` when
    given, the way pip's ``ravedata`` launcher runs); returns its stdout."""
    if name is None:
        cmd = [sys.executable, "-c", code, *args]
    else:
        assert tmp is not None
        script = tmp / name
        script.write_text(code)
        cmd = [sys.executable, str(script), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_parent_process_never_imports_numpy_or_the_pipeline(tmp_path):
    # The parent only plans, copies encoded values into the LMDB and writes
    # the manifest; numpy there would delay the first worker (~0.07 s).
    write(tmp_path / "in" / "a.wav", concat(sine(1.0, 16000), silence(1.5, 16000), noise(1.0, 16000)), 16000)
    write(tmp_path / "in" / "b.flac", sine(1.5, 22050, freq=220, channels=2), 22050)
    code = (
        "import sys, json\n"
        "from rave_data.prep import prep\n"
        "from rave_data.prep.settings import PrepSettings\n"
        "r = prep(sys.argv[1], sys.argv[2], PrepSettings(sr=16000, num_signal=2048), jobs=2)\n"
        "heavy = [m for m in ('numpy', 'soundfile', 'rave_data.prep.worker', 'rave_data.prep.blocks', 'rave_data.dataset.codec') if m in sys.modules]\n"
        "print(json.dumps({'processed': r['run']['processed'], 'heavy': heavy}))\n"
    )
    out = json.loads(_run(code, str(tmp_path / "in"), str(tmp_path / "out")))
    assert out["processed"] == 2
    assert out["heavy"] == []
    assert len(list((tmp_path / "out" / "audio").rglob("*.wav"))) == 2


_IMPORT_PROBE = (
    "import sys, json, psutil\n"
    "import rave_data.cli, rave_data.cli.app\n"
    "kids = [' '.join(p.cmdline()) for p in psutil.Process().children()]\n"
    "spec = getattr(sys.modules['__main__'].__spec__, 'name', None)\n"
    "print(json.dumps({'server': any('multiprocessing.forkserver' in k for k in kids), 'spec': spec}))\n"
)


def test_importing_the_cli_starts_nothing(tmp_path):
    # Also as a script named like the console-script launcher, with prep's arguments.
    for name in ("ravedata", None):
        out = json.loads(_run(_IMPORT_PROBE, "prep", "in", "out", name=name, tmp=tmp_path))
        assert out == {"server": False, "spec": None}, name


#: Runs the entry point and records, when Typer is first imported, whether
#: the workers' fork server is running already.
_MAIN_PROBE = (
    "import sys, json, psutil\n"
    "from rave_data.cli import main\n"
    "seen = {}\n"
    "class Watch:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name == 'typer' and 'server' not in seen:\n"
    "            kids = [' '.join(p.cmdline()) for p in psutil.Process().children()]\n"
    "            seen['server'] = any('multiprocessing.forkserver' in k for k in kids)\n"
    "sys.meta_path.insert(0, Watch())\n"
    "try:\n"
    "    main(sys.argv[1:])\n"
    "except SystemExit as exc:\n"
    "    seen['exit'] = exc.code\n"
    "print(json.dumps(seen))\n"
)


def test_entry_point_starts_the_fork_server_before_typer_for_prep_only(tmp_path):
    def probe(*args: str) -> dict:
        return json.loads(_run(_MAIN_PROBE, *args, name="ravedata", tmp=tmp_path).splitlines()[-1])

    assert probe("prep", str(tmp_path / "missing"), str(tmp_path / "out")) == {"server": True, "exit": 2}
    assert probe("prep", "--help") == {"server": False, "exit": 0}
    assert probe("duration", str(tmp_path / "missing")) == {"server": False, "exit": 2}


def test_start_order_most_estimated_work_first_ties_by_path():
    from rave_data.prep.job import SourceJob
    from rave_data.prep.pool import start_order
    from rave_data.prep.settings import PrepSettings

    s = PrepSettings()
    todo = [SourceJob(f"/in/{r}", r, "fp", "/out", "/work", s) for r in ("a.wav", "b.MP3", "c.flac", "d.wav")]
    sizes = {"a.wav": 1000, "b.MP3": 100, "c.flac": 500, "d.wav": 1000}
    # An mp3 is small for its length (x30 per byte), flac x2.5, PCM x1.
    assert [j.rel for j in start_order(todo, sizes)] == ["b.MP3", "c.flac", "a.wav", "d.wav"]


def test_keys_follow_the_start_order_whatever_jobs(tmp_path):
    # The compressed file sorts last by path but has the most estimated work:
    # it starts first and its examples get the first keys, with 1 or 2 jobs.
    from rave_data.dataset.manifest import read_manifest
    from rave_data.prep import prep
    from rave_data.prep.settings import PrepSettings

    write(tmp_path / "in" / "a.wav", noise(1.0, 16000, seed=1), 16000)
    write(tmp_path / "in" / "z.ogg", noise(2.0, 16000, seed=2), 16000)
    settings = PrepSettings(sr=16000, num_signal=2048)
    firsts = []
    for jobs in (1, 2):
        prep(tmp_path / "in", tmp_path / f"out{jobs}", settings, jobs=jobs)
        lines = {x["source"]: x["keys"] for x in read_manifest(tmp_path / f"out{jobs}" / "manifest.jsonl")}
        assert lines["z.ogg"][0] == "00000000" and lines["a.wav"][0] == f"{len(lines['z.ogg']):08d}"
        firsts.append(lines)
    assert firsts[0] == firsts[1]


def test_progress_follows_estimated_work_and_adds_up(tmp_path):
    from rave_data.prep import prep
    from rave_data.prep.pool import work_estimate
    from rave_data.prep.progress import Progress, RichProgress
    from rave_data.prep.settings import PrepSettings

    write(tmp_path / "in" / "a.wav", noise(1.0, 16000, seed=1), 16000)
    write(tmp_path / "in" / "z.ogg", noise(2.0, 16000, seed=2), 16000)

    class Recorder(Progress):
        def start(self, files: int, work: int) -> None:
            self.files, self.total, self.done = files, work, []

        def advance(self, result, work: int) -> None:
            self.done.append((result.source, work))

    rec = Recorder()
    prep(tmp_path / "in", tmp_path / "out", PrepSettings(sr=16000, num_signal=2048), jobs=2, progress=rec)
    sizes = {p.name: p.stat().st_size for p in (tmp_path / "in").iterdir()}
    assert rec.files == 2 and sorted(s for s, _ in rec.done) == ["a.wav", "z.ogg"]
    assert dict(rec.done) == {n: round(work_estimate(n, sizes[n])) for n in sizes}
    assert sum(w for _, w in rec.done) == rec.total
    # The real bar runs through the same calls (no terminal here: it must not fail).
    report = prep(tmp_path / "in", tmp_path / "out2", PrepSettings(sr=16000, num_signal=2048), jobs=1,
                  progress=RichProgress())
    assert report["run"]["processed"] == 2
