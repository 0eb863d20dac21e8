"""Malformed-input campaign: feed the real CLI broken params files and corrupted inputs.

Every case runs the real command in a subprocess, in a folder of its own holding a copy of a
small valid data set (and, for ``run-protocol``, a copy of a project with imported data), with
a time limit. Each case is classified:

    accepted   exit 0, nothing non-finite in the MRC files written
    refused    exit 2 or 3, a message on stderr, no traceback, nothing left behind
    internal   "internal error" or "Traceback" on stderr, or another exit code
    hang       the time limit was reached
    partial    refused, but left something behind: a new run after a validation error
               (exit 2), or output files from a stand-alone command that failed
    garbage    exit 0 but an output map or stack holds NaN or infinity
    modified   an input file changed

Run it with the project's virtual environment::

    .venv/bin/python tools/malformed_campaign.py --jobs 2 --report campaign.md

``--limit N`` samples N cases (seeded) for a quick look; ``--params-limit N`` samples N of the
params-file cases and runs every corrupted-file case; the default runs every case (about
1,800: an hour and a half on two busy cores).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shutil
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import mrcfile
import numpy as np

TIMEOUT_S = 120.0
CLEAN_EXITS = {2, 3}


@dataclass
class Case:
    """One command and what to prepare before it runs."""

    name: str
    args: list[str]
    files: dict[str, bytes] = field(default_factory=dict)  # written into the case folder
    needs_project: bool = False
    outdir: str | None = None  # stand-alone commands: must not exist after a failure


@dataclass
class Outcome:
    case: Case
    kind: str
    exit_code: int | None
    seconds: float
    detail: str


# -- the valid base data ------------------------------------------------------------------------
def cli(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "cryoweave.cli", *args], cwd=cwd,
                            capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise SystemExit(f"base data: cryoweave {' '.join(args)} failed:\n{result.stderr}")
    return result


def make_base(base: Path) -> None:
    """Simulated particles, a map, micrographs, a .cs file and a project importing them."""
    data = base / "data"
    cli("simulate", "-o", "data/sim", "--phantom", "-n", "24", "--box", "32", "--pixel-size",
        "3", "--snr", "1", "--seed", "1", cwd=base)
    mics = data / "mics"
    mics.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        with mrcfile.new(mics / f"mic{i}.mrc") as mrc:
            mrc.set_data(rng.normal(size=(96, 96)).astype(np.float32))
            mrc.voxel_size = 1.5
    n = 24
    cs = np.zeros(n, dtype=[("blob/path", "S64"), ("blob/idx", "<u4"), ("blob/shape", "<u4", 2),
                            ("blob/psize_A", "<f4"), ("ctf/df1_A", "<f4"),
                            ("ctf/df2_A", "<f4"), ("ctf/df_angle_rad", "<f4"),
                            ("ctf/accel_kv", "<f4"), ("ctf/cs_mm", "<f4"),
                            ("ctf/amp_contrast", "<f4"), ("alignments3D/pose", "<f4", 3),
                            ("alignments3D/shift", "<f4", 2)])
    cs["blob/path"] = b"sim/particles.mrcs"
    cs["blob/idx"] = np.arange(n)
    cs["blob/shape"] = 32
    cs["blob/psize_A"] = 3.0
    cs["ctf/df1_A"], cs["ctf/df2_A"] = 15000.0, 14500.0
    cs["ctf/accel_kv"], cs["ctf/cs_mm"], cs["ctf/amp_contrast"] = 300.0, 2.7, 0.1
    cs["alignments3D/pose"] = rng.normal(size=(n, 3)) * 0.5
    with open(data / "particles.cs", "wb") as handle:
        np.save(handle, cs)
    (base / "parts.json").write_text(json.dumps({"path": "data/sim/particles.star"}))
    (base / "vol.json").write_text(json.dumps({"path": "data/sim/truth.mrc"}))
    (base / "mics.json").write_text(json.dumps({"pattern": "data/mics/*.mrc"}))
    cli("init", "proj", cwd=base)
    for label in ("parts", "vol", "mics"):
        protocol = {"parts": "ImportParticles", "vol": "ImportVolume",
                    "mics": "ImportMicrographs"}[label]
        cli("run-protocol", protocol, f"{label}.json", "--project", "proj", "--label", label,
            "--quiet", cwd=base)


# -- params-file cases --------------------------------------------------------------------------
def ref(label: str, output: str) -> dict:
    return {"run": label, "output": output}


BASE_PARAMS: dict[str, dict] = {
    "ImportParticles": {"path": "data/sim/particles.star"},
    # timeout_s: a case that turns streaming on (e.g. "yes") then closes 5 s after its last
    # file instead of the default 300 s, a wait the time limit would count as a hang
    "ImportMicrographs": {"pattern": "data/mics/*.mrc", "timeout_s": 5.0},
    "ImportVolume": {"path": "data/sim/truth.mrc"},
    "PreprocessMicrographs": {"micrographs": ref("mics", "micrographs"), "do_invert": True},
    "Downsample": {"particles": ref("parts", "particles"), "box_px": 16},
    "SimulateParticles": {"phantom": True, "n_particles": 8, "box_px": 24,
                          "pixel_size_a": 3.0},
    "ReconstructFourier": {"particles": ref("parts", "particles")},
    "ReconstructHighRes": {"particles": ref("parts", "particles"),
                           "initial_volumes": ref("vol", "volume"), "iterations": 1,
                           "alignment": "none"},
}

# Bad values by the kind of parameter (``Infinity``/``NaN`` are written as bare tokens, which
# Python's json reads). Every parameter also gets the values of ANY.
ANY: list[object] = [None, {"x": 1}]
NUMBER: list[object] = ["abc", -1, 0, 1e308, float("inf"), float("nan"), 2**70]
TEXT: list[object] = [7, "", "line\nbreak", "c20000", "c999999999999999999999999999999", "d0",
                      "x7", "../../../../etc/passwd", "/etc/passwd"]
BOOLEAN: list[object] = ["yes", 2]
INPUT: list[object] = [7, "abc", ref("nope", "particles"), ref("parts", "nope"),
                       ref("vol", "volume"), ref("mics", "micrographs"), ref("parts", "particles"),
                       "data/sim/particles.mrcs", "data/sim/truth.mrc", "data/mics/mic0.mrc",
                       "data/particles.cs", "/etc/passwd", "../../../../etc/passwd"]


def bad_values(schema: dict) -> list[object]:
    """The bad values for one parameter, from its JSON Schema."""
    text = json.dumps(schema)
    values = list(ANY)
    if '"run"' in text:
        values += INPUT
    if '"number"' in text or '"integer"' in text:
        values += NUMBER
    if '"string"' in text or '"enum"' in text:
        values += TEXT
    if '"boolean"' in text:
        values += BOOLEAN
    return values


def params_cases() -> list[Case]:
    cases = []
    for protocol, base in BASE_PARAMS.items():
        properties = _schema_properties(protocol)
        cases.append(Case(f"{protocol}/valid", _run(protocol), {"p.json": _json(base)}, True))
        for key, schema in properties.items():
            # a parameter shown only with another one (`visible_if`) gets that one set, so
            # that its bad value is used, not ignored
            shown: dict[str, object] = {}
            gates = dict(schema.get("visible_if", {}))
            while gates:  # and what shows that one (local_max_scale_change: local_scale, …)
                name, wanted = gates.popitem()
                shown[name] = wanted[0] if isinstance(wanted, list) else wanted
                gates.update(properties.get(name, {}).get("visible_if", {}))
            for k, value in enumerate(bad_values(schema)):
                params = {**base, **shown, key: value}
                cases.append(Case(f"{protocol}/{key}={k}:{_short(value)}", _run(protocol),
                                  {"p.json": _json(params)}, True))
            params = dict(base)
            if key in params:
                del params[key]
                cases.append(Case(f"{protocol}/{key} missing", _run(protocol),
                                  {"p.json": _json(params)}, True))
        structural = {
            "empty file": b"",
            "not UTF-8": b'{"box_px": "\xff\xfe"}',
            "duplicate key": _json(base)[:-1] + b', "' + next(iter(base)).encode() + b'": 1}',
            "a list": b"[1, 2]",
            "a string": b'"text"',
            "truncated": _json(base)[:-3],
            "unknown key": _json({**base, "colour": 1}),
            "deep nesting": b"[" * 100_000 + b"]" * 100_000,
        }
        for what, content in structural.items():
            cases.append(Case(f"{protocol}/{what}", _run(protocol), {"p.json": content}, True))
        for label in ("bad\x1b[31mlabel", "x" * 5000, "", "parts", "12"):
            cases.append(Case(f"{protocol}/label={_short(label)}",
                              [*_run(protocol), "--label", label], {"p.json": _json(base)},
                              True))
    return cases


def _schema_properties(protocol: str) -> dict[str, dict]:
    from cryoweave.plugin import registry

    return registry().get(protocol).form_schema()["properties"]


def _run(protocol: str) -> list[str]:
    return ["run-protocol", protocol, "p.json", "--project", "proj", "--quiet"]


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) < 40 else text[:37] + "..."


# -- corrupted input files ----------------------------------------------------------------------
def star_variants(text: str) -> dict[str, str]:
    """Mutations of a RELION 3.1 particles STAR file."""
    lines = text.splitlines()
    header_end = max(i for i, line in enumerate(lines) if line.startswith("_rln"))
    labels = [line.split()[0] for line in lines if line.startswith("_rln")]
    first_row = header_end + 1
    variants: dict[str, str] = {}

    def with_value(label: str, value: str, row: int = first_row) -> str:
        copy = list(lines)
        # the label's position within its own table
        table_start = max(i for i in range(row) if lines[i].startswith("loop_"))
        table_labels = [line.split()[0] for line in lines[table_start + 1:row]
                        if line.startswith("_rln")]
        fields = copy[row].split()
        fields[table_labels.index(label)] = value
        copy[row] = "  ".join(fields)
        return "\n".join(copy) + "\n"

    optics_row = next(i for i, line in enumerate(lines)
                      if i > 0 and lines[i - 1].startswith("_rln") and not line.startswith("_")
                      and line.strip())
    for label in labels:
        row = first_row if optics_row < first_row and label not in _optics_labels(lines) \
            else optics_row
        for value in ("abc", "nan", "inf", "-4", "0", "1e400"):
            with contextlib.suppress(ValueError, IndexError):
                variants[f"{label}={value}"] = with_value(label, value, row)
    variants["duplicated column"] = text.replace("_rlnDefocusU", "_rlnDefocusU #90\n_rlnDefocusU",
                                                 1)
    variants["missing optics group column"] = "\n".join(
        line for line in lines if not line.startswith("_rlnOpticsGroup ")) + "\n"
    cut_row = " ".join(lines[first_row + 2].split()[:3])
    variants["row truncated"] = "\n".join(
        [*lines[:first_row + 2], cut_row, *lines[first_row + 3:]]) + "\n"
    variants["empty"] = ""
    variants["header only"] = "\n".join(lines[:first_row]) + "\n"
    variants["binary"] = "\x00\x01\x02garbage"
    variants["index 0"] = text.replace("000001@", "000000@", 1)
    variants["index past the stack"] = text.replace("000001@", "009999@", 1)
    variants["missing stack"] = text.replace("particles.mrcs", "nothere.mrcs")
    variants["newline in name"] = text.replace("particles.mrcs", "parti\\ncles.mrcs", 1)
    return variants


def _optics_labels(lines: list[str]) -> set[str]:
    labels, in_optics = set(), False
    for line in lines:
        if line.startswith("data_optics"):
            in_optics = True
        elif line.startswith("data_"):
            in_optics = False
        elif in_optics and line.startswith("_rln"):
            labels.add(line.split()[0])
    return labels


def mrc_variants(content: bytes) -> dict[str, bytes]:
    """Mutations of an MRC stack/map: modes, sizes, dimensions."""
    variants = {}
    for mode in (0, 1, 3, 4, 6, 12, 99):
        variants[f"mode {mode}"] = content[:12] + struct.pack("<i", mode) + content[16:]
    variants["truncated"] = content[: len(content) - 100]
    variants["extra bytes"] = content + b"\0" * 64
    variants["nx negative"] = struct.pack("<i", -32) + content[4:]
    variants["nz zero"] = content[:8] + struct.pack("<i", 0) + content[12:]
    variants["huge nz"] = content[:8] + struct.pack("<i", 2**30) + content[12:]
    variants["header only"] = content[:1024]
    variants["empty"] = b""
    variants["text"] = b"this is not an MRC file\n" * 100
    variants["nsymbt huge"] = content[:92] + struct.pack("<i", 2**30) + content[96:]
    variants["pixel size zero"] = content[:40] + struct.pack("<fff", 0, 0, 0) + content[52:]
    return variants


def cs_variants(content: bytes) -> dict[str, bytes]:
    import io

    base = np.load(io.BytesIO(content))
    variants = {}

    def save(array: np.ndarray) -> bytes:
        handle = io.BytesIO()
        np.save(handle, array)
        return handle.getvalue()

    negative = base.astype([(n, "<i4") if n == "blob/idx" else (n, base.dtype[n].base,
                            base.dtype[n].shape) for n in base.dtype.names])
    negative["blob/idx"][3] = -1
    variants["negative index"] = save(negative)
    past = base.copy()
    past["blob/idx"][3] = 10_000
    variants["index past the stack"] = save(past)
    no_shift = _drop(base, "alignments3D/shift")
    variants["pose without shift"] = save(no_shift)
    for field_name, value in (("blob/psize_A", 0.0), ("blob/psize_A", np.inf),
                              ("ctf/accel_kv", -1.0), ("ctf/cs_mm", np.nan),
                              ("ctf/df1_A", np.inf)):
        changed = base.copy()
        changed[field_name] = value
        variants[f"{field_name}={value}"] = save(changed)
    variants["no blob/path"] = save(_drop(base, "blob/path"))
    variants["not numpy"] = b"garbage" * 10
    variants["empty array"] = save(base[:0])
    return variants


def _drop(array: np.ndarray, name: str) -> np.ndarray:
    names = [n for n in array.dtype.names if n != name]
    out = np.zeros(len(array), dtype=[(n, array.dtype[n].base, array.dtype[n].shape)
                                      for n in names])
    for n in names:
        out[n] = array[n]
    return out


def file_cases(base: Path) -> list[Case]:
    cases = []
    star = (base / "data/sim/particles.star").read_text()
    stack = (base / "data/sim/particles.mrcs").read_bytes()
    volume = (base / "data/sim/truth.mrc").read_bytes()
    cs = (base / "data/particles.cs").read_bytes()
    mic = (base / "data/mics/mic0.mrc").read_bytes()
    imports = {"ImportParticles": {"path": "data/sim/particles.star"}}
    for what, text in star_variants(star).items():
        files = {"data/sim/particles.star": text.encode()}
        cases.append(Case(f"star {what}/downsample",
                          ["downsample", "data/sim/particles.star", "-D", "16", "-o", "out"],
                          files, outdir="out"))
        cases.append(Case(f"star {what}/Downsample path",
                          _run("Downsample"),
                          {**files, "p.json": _json({"particles": "data/sim/particles.star",
                                                      "box_px": 16})}, True))
        cases.append(Case(f"star {what}/import", _run("ImportParticles"),
                          {**files, "p.json": _json(imports["ImportParticles"])}, True))
    for what, content in mrc_variants(stack).items():
        files = {"data/sim/particles.mrcs": content}
        cases.append(Case(f"stack {what}/downsample",
                          ["downsample", "data/sim/particles.star", "-D", "16", "-o", "out"],
                          files, outdir="out"))
        cases.append(Case(f"stack {what}/ReconstructFourier path", _run("ReconstructFourier"),
                          {**files, "p.json": _json({"particles": "data/sim/particles.star"})},
                          True))
    for what, content in mrc_variants(volume).items():
        files = {"data/sim/truth.mrc": content}
        cases.append(Case(f"map {what}/ImportVolume", _run("ImportVolume"),
                          {**files, "p.json": _json({"path": "data/sim/truth.mrc"})}, True))
        cases.append(Case(f"map {what}/simulate",
                          ["simulate", "-o", "out", "--volume", "data/sim/truth.mrc", "-n", "4"],
                          files, outdir="out"))
    for what, content in mrc_variants(mic).items():
        files = {"data/mics/mic0.mrc": content}
        cases.append(Case(f"micrograph {what}/ImportMicrographs", _run("ImportMicrographs"),
                          {**files, "p.json": _json({"pattern": "data/mics/*.mrc"})}, True))
    for what, content in cs_variants(cs).items():
        files = {"data/particles.cs": content}
        cases.append(Case(f"cs {what}/downsample",
                          ["downsample", "data/particles.cs", "-D", "16", "-o", "out",
                           "--datadir", "data"], files, outdir="out"))
    for option, value in (("--pixel-size", "1e400"), ("--pixel-size", "0"), ("--box", "1"),
                          ("--cs", "inf"), ("--voltage", "1e308"), ("--snr", "nan"),
                          ("--symmetry", "c20000"), ("--symmetry", "x7"), ("-n", "0"),
                          ("--max-shift", "inf"), ("--amplitude-contrast", "2")):
        cases.append(Case(f"simulate {option} {value}",
                          ["simulate", "-o", "out", "--phantom", "-n", "4", "--box", "24",
                           "--pixel-size", "3", option, value], outdir="out"))
    return cases


# -- running and classifying --------------------------------------------------------------------
def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def count_runs(project: Path) -> tuple[int, int]:
    db = project / "project.sqlite"
    with sqlite3.connect(db) as conn:
        runs = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
    return runs, len(list((project / "Runs").iterdir()))


def non_finite_outputs(folder: Path) -> list[str]:
    bad = []
    for path in list(folder.rglob("*.mrc")) + list(folder.rglob("*.mrcs")):
        try:
            with mrcfile.mmap(path, permissive=True) as mrc:
                if mrc.data is not None and not np.isfinite(mrc.data).all():
                    bad.append(str(path.relative_to(folder)))
        except Exception:
            bad.append(f"{path.relative_to(folder)} (unreadable)")
    return bad


def run_case(case: Case, base: Path, work: Path, index: int) -> Outcome:
    folder = work / f"case{index:05d}"
    shutil.copytree(base / "data", folder / "data")
    if case.needs_project:
        shutil.copytree(base / "proj", folder / "proj")
    for name, content in case.files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    inputs_before = digest(folder / "data")
    runs_before = count_runs(folder / "proj") if case.needs_project else None
    started = time.monotonic()
    try:
        result = subprocess.run([sys.executable, "-m", "cryoweave.cli", *case.args],
                                cwd=folder, capture_output=True, text=True,
                                timeout=TIMEOUT_S, env={**os.environ, "COLUMNS": "200"},
                                errors="replace")
    except subprocess.TimeoutExpired:
        return Outcome(case, "hang", None, time.monotonic() - started, "")
    seconds = time.monotonic() - started
    stderr = result.stderr.strip()
    last = stderr.splitlines()[-1] if stderr else ""
    kind, detail = "accepted", ""
    if "Traceback" in stderr or "internal error" in stderr:
        kind, detail = "internal", _first_error_line(stderr)
    elif result.returncode == 0:
        bad = non_finite_outputs(folder / "out") if (folder / "out").exists() else []
        if case.needs_project:
            bad += non_finite_outputs(folder / "proj" / "Runs")
        if bad:
            kind, detail = "garbage", ", ".join(bad[:3])
    elif result.returncode in CLEAN_EXITS:
        kind, detail = "refused", _first_error_line(stderr) or last
        if not stderr:
            kind, detail = "internal", "no message"
        elif case.outdir and (folder / case.outdir).exists() and any(
                (folder / case.outdir).iterdir()):
            kind, detail = "partial", f"left {case.outdir}/ behind: {detail}"
        elif case.needs_project and result.returncode == 2 and \
                count_runs(folder / "proj") != runs_before:
            kind, detail = "partial", f"created a run on a validation error: {detail}"
    else:
        kind, detail = "internal", f"exit {result.returncode}: {last}"
    if digest(folder / "data") != inputs_before:
        changed = [n for n, h in digest(folder / "data").items() if inputs_before.get(n) != h]
        if set(changed) - {n.removeprefix("data/") for n in case.files}:
            kind, detail = "modified", ", ".join(changed[:3])
    shutil.rmtree(folder, ignore_errors=True)
    return Outcome(case, kind, result.returncode, seconds, detail[:300])


def _first_error_line(stderr: str) -> str:
    for line in stderr.splitlines():
        if "error" in line.lower():
            return line.strip()
    return stderr.splitlines()[-1].strip() if stderr else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="sample this many cases")
    parser.add_argument("--params-limit", type=int, default=None,
                        help="sample this many of the params-file cases (all file cases run)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default=None, help="run cases whose name contains this")
    parser.add_argument("--report", type=Path, default=None, help="write a markdown report")
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="cryoweave-campaign-"))
    work.mkdir(parents=True, exist_ok=True)
    base = work / "base"
    if not (base / "proj" / "project.sqlite").exists():
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir()
        make_base(base)
    params = params_cases()
    if args.params_limit and args.params_limit < len(params):
        params = random.Random(args.seed).sample(params, args.params_limit)
    cases = params + file_cases(base)
    if args.only:
        cases = [c for c in cases if args.only in c.name]
    if args.limit and args.limit < len(cases):
        cases = random.Random(args.seed).sample(cases, args.limit)
    print(f"{len(cases)} cases, {args.jobs} at a time, in {work}", flush=True)
    started = time.monotonic()
    outcomes: list[Outcome] = []
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_case, c, base, work, i) for i, c in enumerate(cases)]
        for i, future in enumerate(futures, 1):
            outcome = future.result()
            outcomes.append(outcome)
            if outcome.kind not in ("accepted", "refused"):
                print(f"[{outcome.kind}] {outcome.case.name}: {outcome.detail}", flush=True)
            if i % 50 == 0:
                print(f"  {i}/{len(cases)} ({time.monotonic() - started:.0f} s)", flush=True)
    counts = Counter(o.kind for o in outcomes)
    print(json.dumps(dict(sorted(counts.items())), indent=2))
    if args.report:
        write_report(args.report, outcomes, counts, time.monotonic() - started)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    bad = sum(counts[k] for k in ("internal", "hang", "partial", "garbage", "modified"))
    sys.exit(1 if bad else 0)


def write_report(path: Path, outcomes: list[Outcome], counts: Counter, seconds: float) -> None:
    lines = [f"# Malformed-input campaign ({len(outcomes)} cases, {seconds:.0f} s)", "",
             "| outcome | cases |", "|---|---|"]
    lines += [f"| {kind} | {n} |" for kind, n in sorted(counts.items())]
    lines += ["", "## Cases that are not accepted or cleanly refused", ""]
    lines += [f"- `{o.case.name}`: {o.kind} ({o.detail})" for o in outcomes
              if o.kind not in ("accepted", "refused")] or ["none"]
    lines += ["", "## Accepted cases (review: should any have been refused?)", ""]
    lines += [f"- `{o.case.name}`" for o in outcomes if o.kind == "accepted"]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
