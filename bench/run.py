"""medforensics benchmark suite: speed and memory of ingest, decode, identify, training, detect.

Usage::

    python bench/run.py [--quick] [--out bench/out] [--work DIR] [--repeats K] [--threads T]

Writes ``OUT/bench.json`` (every measurement, its repeats and the machine) and
``OUT/bench.md`` (the table). Each speed is given with a ratio against a baseline measured in
the same run on the same files (raw pydicom decode, raw header reads, model-only training
steps), so the figures stay meaningful on a busy machine; wall-clock values are medians of
``--repeats`` runs, and CPU-seconds are recorded next to them.

Generated data (simulated archive, the 4000 x 5000 image, the model) is kept under ``--work``
(default ``OUT/work``) and reused when the parameters match, so a second run skips it.
Not a test: nothing here asserts; the goals are stated in the table. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve()


# ----------------------------------------------------------------------------- helpers
def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _status_kib(key: str) -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def vmrss_kib() -> int:
    """Current resident set size of this process (kB, VmRSS of /proc/self/status)."""
    return _status_kib("VmRSS")


def peak_rss_kib() -> int:
    """Peak resident set size of this process image (kB).

    VmHWM of /proc/self/status: the high-water mark of this program's own address space.
    ``getrusage(...).ru_maxrss`` is not used: Linux carries it over from the parent across
    fork + exec, so a child of a large parent would report the parent's size.
    """
    hwm = _status_kib("VmHWM")
    if hwm < 0:
        import resource

        hwm = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return hwm


def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(fn: Callable[[], Any], repeats: int) -> dict[str, Any]:
    """Run ``fn`` ``repeats`` times: wall and CPU seconds of each run, and their medians.

    ``cpu_s`` is this process's CPU time; ``children_cpu_s`` that of worker processes that
    finished during the run (process pools shut down inside ``fn``).
    """
    walls, cpus, kids = [], [], []
    out = None
    for _ in range(repeats):
        t, c, k = time.perf_counter(), time.process_time(), _children_cpu()
        out = fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
        kids.append(_children_cpu() - k)
    return {"wall_s": walls, "cpu_s": cpus, "children_cpu_s": kids,
            "wall_median_s": statistics.median(walls), "cpu_median_s": statistics.median(cpus),
            "children_cpu_median_s": statistics.median(kids), "result": out}


def machine_info(threads: int) -> dict[str, Any]:
    import numpy
    import pydicom
    import torch

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE.parent,
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": model, "mem_total": mem,
        "torch_threads": threads, "torch_interop_threads": torch.get_num_interop_threads(),
        "load_average_start": list(os.getloadavg()),
        "python": platform.python_version(), "torch": torch.__version__,
        "numpy": numpy.__version__, "pydicom": pydicom.__version__,
        "platform": platform.platform(), "git_commit": commit,
    }


# ----------------------------------------------------------------------------- data
def ensure_archive(work: Path, *, n_files: int, size: tuple[int, int], seed: int,
                   transfer_syntax: str = "explicit") -> list[str]:
    """Simulated DICOM archive (cached under ``work``): about ``n_files`` files of ``size`` px."""
    from medforensics.synth.simulate import simulate_archive

    ts = "" if transfer_syntax == "explicit" else f"_{transfer_syntax}"
    root = work / f"archive_{n_files}_{size[0]}-{size[1]}_s{seed}{ts}"
    done = work / f"{root.name}.complete"
    if not done.is_file():
        import shutil

        shutil.rmtree(root, ignore_errors=True)
        log(f"simulating {n_files} files of {size[0]}-{size[1]} px into {root} ...")
        t = time.perf_counter()
        simulate_archive(root, manufacturers=2, models_per_manufacturer=2, units_per_model=1,
                         patients=max(1, n_files // 2), images_per_patient=2, size=size,
                         seed=seed, multi_device_fraction=0.0,
                         transfer_syntax=transfer_syntax)
        done.write_text(json.dumps({"seconds": time.perf_counter() - t}))
        log(f"  simulated in {time.perf_counter() - t:.0f} s")
    return sorted(str(p) for p in root.rglob("*.dcm"))


def ensure_big_image(work: Path, donor: str, shape: tuple[int, int] = (4000, 5000)) -> str:
    """A ``shape`` 16-bit DICOM made from ``donor``'s stored values (mirror-tiled)."""
    import numpy as np

    from medforensics.io import read_stored, save_dicom_like

    out = work / f"big_{shape[0]}x{shape[1]}.dcm"
    if not out.is_file():
        a = read_stored(donor).pixels
        while a.shape[0] < shape[0] or a.shape[1] < shape[1]:
            a = np.concatenate([a, a[::-1]], axis=0) if a.shape[0] < shape[0] else a
            a = np.concatenate([a, a[:, ::-1]], axis=1) if a.shape[1] < shape[1] else a
        save_dicom_like(donor, np.ascontiguousarray(a[: shape[0], : shape[1]]), out)
    return str(out)


# ----------------------------------------------------------------------------- measurements
def bench_ingest_decode(files: list[str], repeats: int) -> dict[str, Any]:
    import pydicom

    from medforensics.data.manifest import ingest
    from medforensics.io import read_image

    n = len(files)

    def raw_header() -> None:
        for f in files:
            pydicom.dcmread(f, stop_before_pixels=True)

    def raw_decode() -> int:
        nbytes = 0
        for f in files:
            nbytes += pydicom.dcmread(f).pixel_array.nbytes
        return nbytes

    def contract() -> None:
        for f in files:
            read_image(f)

    res: dict[str, Any] = {"n_files": n}
    log(f"raw header read / raw decode / read_image on {n} files x {repeats} ...")
    raw_decode()  # warm the page cache
    res["raw_header"] = timed(raw_header, repeats)
    res["raw_decode"] = timed(raw_decode, repeats)
    res["raw_decode_bytes"] = res["raw_decode"].pop("result")
    res["read_image"] = timed(contract, repeats)
    log("ingest (in-process and default process pool) ...")
    res["ingest_1"] = timed(lambda: len(ingest(files, workers=1, progress=False)), repeats)
    res["ingest_default"] = timed(lambda: len(ingest(files, progress=False)), repeats)
    for k in ("raw_header", "raw_decode", "read_image", "ingest_1", "ingest_default"):
        res[k]["files_per_s"] = n / res[k]["wall_median_s"]
        res[k]["files_per_cpu_s"] = n / max(res[k]["cpu_median_s"], 1e-9)
        res[k].pop("result", None)
    return res


def bench_training(files: list[str], work: Path, quick: bool) -> dict[str, Any]:
    """Per preset: model-only steps, 2 epochs decoding, 2 epochs from a prepared store."""
    import shutil

    import torch

    from medforensics.data.manifest import ingest
    from medforensics.data.store import open_store, prepare_store
    from medforensics.models.bench import training_throughput
    from medforensics.models.registry import training_defaults
    from medforensics.training.engine import train

    rows = ingest(files, workers=1, progress=False)
    for r in rows:
        r["split"] = "train" if r["status"] == "eligible" else ""
    store = work / "store"
    shutil.rmtree(store, ignore_errors=True)
    log("prepare_store ...")
    rep = prepare_store(rows, store, progress=False)
    out: dict[str, Any] = {"prepare": {"images": rep.n_decoded, "seconds": rep.seconds,
                                       "images_per_s": rep.images_per_second,
                                       "failures": len(rep.failures)}}
    source = open_store(store, rows)
    epochs = 2
    for preset in ("patch", "deep-rsi", "deepmammo"):
        batch = int(training_defaults(preset).batch_size)
        log(f"training throughput {preset}: model only ...")
        mo = training_throughput(preset, batch=batch, steps=3 if quick else 8, warmup=2,
                                 threads=torch.get_num_threads(), num_classes=4)
        rec: dict[str, Any] = {"model_only": mo}
        for mode, src in (("decode", None), ("store", source)):
            run = work / f"train_{preset}_{mode}"
            shutil.rmtree(run, ignore_errors=True)
            log(f"training {preset} {epochs} epochs, {mode} ...")
            extra = {"patches_per_image": 8 if quick else 24} if preset == "patch" else {}
            cpu0 = time.process_time()
            res = train(rows, out_dir=str(run), preset=preset, label="model", epochs=epochs,
                        progress=False, image_source=src, **extra)
            cpu = time.process_time() - cpu0
            samples = sum(m["train_samples"] for m in res.metrics)
            rec[f"{mode}_cpu"] = {"cpu_s": cpu, "samples": samples,
                                  "items_per_cpu_s": samples / max(cpu, 1e-9)}
            rec[mode] = [{"epoch": m["epoch"], "seconds": m["seconds"],
                          "samples": m["train_samples"],
                          "items_per_s": m["train_samples"] / m["seconds"]}
                         for m in res.metrics]
            rec[f"{mode}_run"] = str(run)
        out[preset] = rec
    return out


def bench_identify(run: str, files: list[str], repeats: int, workers: int) -> dict[str, Any]:
    from medforensics.source.predictor import SourcePredictor, identify_files

    pred = SourcePredictor.from_run(run)
    list(identify_files(pred, files[:2]))  # warm-up (lazy imports, first forward)
    out: dict[str, Any] = {"n_files": len(files), "n_patches": pred.n_patches,
                           "preset": pred.preset}

    def go(w: int) -> Callable[[], int]:
        return lambda: sum(1 for v, _ in identify_files(pred, files, workers=w)
                           if v.to_dict().get("verdict") != "unreadable")

    log(f"identify serial on {len(files)} files x {repeats} ...")
    out["serial"] = timed(go(0), repeats)
    if workers > 0:
        log(f"identify with {workers} decode-ahead workers ...")
        out[f"workers_{workers}"] = timed(go(workers), repeats)
    for k in [k for k in out if isinstance(out[k], dict)]:
        out[k]["files_per_s"] = len(files) / out[k]["wall_median_s"]
        out[k]["files_per_cpu_s_main"] = len(files) / max(out[k]["cpu_median_s"], 1e-9)
        out[k]["readable"] = out[k].pop("result")
    return out


def bench_compressed(run: str, files: list[str], repeats: int) -> dict[str, Any]:
    """Raw decode and identify on a JPEG 2000 lossless archive (decode is no longer cheap)."""
    import pydicom

    from medforensics.source.predictor import SourcePredictor, identify_files

    pred = SourcePredictor.from_run(run)
    list(identify_files(pred, files[:1]))
    log(f"JPEG 2000 archive: raw decode and identify on {len(files)} files x {repeats} ...")
    out: dict[str, Any] = {"n_files": len(files)}
    out["raw_decode"] = timed(lambda: [pydicom.dcmread(f).pixel_array.shape for f in files],
                              repeats)
    out["identify"] = timed(lambda: list(identify_files(pred, files)), repeats)
    for k in ("raw_decode", "identify"):
        out[k].pop("result")
        out[k]["files_per_s"] = len(files) / out[k]["wall_median_s"]
        out[k]["files_per_cpu_s"] = len(files) / max(out[k]["cpu_median_s"], 1e-9)
    return out


def bench_fingerprints(run: str, files: list[str], work: Path,
                       n_query: int) -> dict[str, Any]:
    """identify with unit reference patterns (enrolled from 2 images per unit)."""
    import shutil

    from medforensics.data.manifest import ingest
    from medforensics.source.predictor import SourcePredictor, enroll_units, identify_files

    rows = ingest(files, workers=1, progress=False)
    seen: dict[str, int] = {}
    for r in rows:
        seen[r["unit"]] = seen.get(r["unit"], 0) + 1
        r["split"] = "train" if seen[r["unit"]] <= 2 else "test"
    fp_run = work / "run_fingerprints"
    shutil.rmtree(fp_run, ignore_errors=True)
    shutil.copytree(run, fp_run, ignore=shutil.ignore_patterns("checkpoints"))
    log("enrolling unit fingerprints ...")
    t = time.perf_counter()
    enroll_units(fp_run, rows, max_images_per_unit=2, progress=False)
    enrol_s = time.perf_counter() - t
    query = [r["path"] for r in rows if r["split"] == "test"][:n_query]
    pred = SourcePredictor.from_run(fp_run)
    log(f"identify + fingerprints on {len(query)} files ...")
    r = timed(lambda: list(identify_files(pred, query)), 1)
    r.pop("result")
    return {"n_units": len(pred.fingerprints.patterns), "enrol_seconds": enrol_s,
            "n_files": len(query), **r, "files_per_s": len(query) / r["wall_median_s"],
            "s_per_file": r["wall_median_s"] / max(len(query), 1)}


def bench_units_archive(work: Path, repeats: int, n_query: int = 40, side: int = 2048,
                        seed: int = 5, workers: int | None = None) -> dict[str, Any]:
    """identify on archive-like files with and without enrolled units, against raw decode.

    ``n_query`` + 8 simulated files of ``side`` px (4 models, one unit each, 14-16 bit,
    JPEG 2000 lossless); 2 images per unit enrol the units, a 1-epoch ``patch`` model is
    trained on all of them, and on the ``n_query`` others this measures, interleaved and in
    the same process: raw pydicom decode, identify without units, identify with units
    in-process and with ``workers`` decode-ahead workers (wall medians of ``repeats``; CPU
    includes the workers'), then the per-stage CPU split (decode = ``read_image``,
    patches/model = ``predictor.predict``, unit step = ``identify_unit`` on the decoded
    pixels).
    """
    import shutil

    import pydicom

    from medforensics.common.runtime import decode_workers
    from medforensics.data.manifest import ingest
    from medforensics.io import read_image
    from medforensics.source.predictor import (
        SourcePredictor,
        enroll_units,
        identify_files,
        unit_candidates,
    )
    from medforensics.training.engine import train

    files = ensure_archive(work, n_files=n_query + 8, size=(side, side), seed=seed,
                           transfer_syntax="j2k")
    rows = ingest(files, workers=1, progress=False)
    seen: dict[str, int] = {}
    for r in rows:
        seen[r["unit"]] = seen.get(r["unit"], 0) + 1
        r["split"] = "train" if seen[r["unit"]] <= 2 else "test"
    base = work / f"run_units_{side}"
    if not (base / "model.safetensors").is_file():
        log(f"training a 1-epoch patch model on {len(rows)} {side} px J2K files ...")
        shutil.rmtree(base, ignore_errors=True)
        train([dict(r, split="train") for r in rows], out_dir=str(base), preset="patch",
              epochs=1, patches_per_image=8, progress=False)
    fp_run = work / f"run_units_{side}_fingerprints"
    shutil.rmtree(fp_run, ignore_errors=True)
    shutil.copytree(base, fp_run, ignore=shutil.ignore_patterns("checkpoints"))
    log("enrolling unit fingerprints (2 images per unit) ...")
    enroll_units(fp_run, rows, max_images_per_unit=2, progress=False)
    query = [r["path"] for r in rows if r["split"] == "test"][:n_query]
    if workers is None:
        workers = decode_workers(len(query))
    plain = SourcePredictor.from_run(str(base))
    units = SourcePredictor.from_run(str(fp_run))
    list(identify_files(units, query[:1]))  # warm-up
    out: dict[str, Any] = {"n_files": len(query), "side": side,
                           "n_units": len(units.fingerprints.patterns),
                           "transfer_syntax": "JPEG 2000 lossless"}
    runs: dict[str, list[dict[str, Any]]] = {"raw_decode": [], "identify": [],
                                              "identify_units": [],
                                              f"identify_units_workers_{workers}": []}
    log(f"archive-like files: raw decode / identify / identify + units on {len(query)} "
        f"files x {repeats}, interleaved ...")
    for _ in range(repeats):
        runs["raw_decode"].append(timed(lambda: [pydicom.dcmread(f).pixel_array.shape
                                                 for f in query], 1))
        runs["identify"].append(timed(lambda: list(identify_files(plain, query)), 1))
        runs["identify_units"].append(timed(lambda: list(identify_files(units, query)), 1))
        runs[f"identify_units_workers_{workers}"].append(
            timed(lambda: list(identify_files(units, query, workers=workers)), 1))
    for k, rs in runs.items():
        walls = [r["wall_s"][0] for r in rs]
        cpus = [r["cpu_s"][0] + r["children_cpu_s"][0] for r in rs]
        out[k] = {"wall_s": walls, "cpu_s": cpus, "wall_median_s": statistics.median(walls),
                  "cpu_median_s": statistics.median(cpus),
                  "files_per_s": len(query) / statistics.median(walls),
                  "files_per_cpu_s": len(query) / max(statistics.median(cpus), 1e-9)}
    raw = out["raw_decode"]["files_per_s"]
    out["ratio_identify"] = out["identify"]["files_per_s"] / raw
    out["ratio_identify_units"] = out["identify_units"]["files_per_s"] / raw
    out["workers"] = workers
    out["workers_default"] = workers == decode_workers(len(query))
    out["ratio_identify_units_workers"] = (
        out[f"identify_units_workers_{workers}"]["files_per_s"] / raw)
    # per-stage CPU split with units (one pass)
    stages = {"decode": 0.0, "model": 0.0, "units": 0.0}
    fps = units.fingerprints
    compared = 0
    for f in query:
        t = time.process_time()
        img = read_image(f)
        stages["decode"] += time.process_time() - t
        t = time.process_time()
        pred = units.predict(img.pixels)
        stages["model"] += time.process_time() - t
        cands = unit_candidates(fps, units.classes, pred.probs, img.meta.model or None,
                                level=units.label_column)
        compared += len(fps.units) if cands is None else sum(len(fps.matching_units(m))
                                                             for m in cands)
        t = time.process_time()
        fps.identify_unit(img.pixels, candidates=cands)
        stages["units"] += time.process_time() - t
    out["stage_cpu_ms_per_file"] = {k: 1e3 * v / len(query) for k, v in stages.items()}
    out["units_compared_per_file"] = compared / len(query)
    return out


def detector_available() -> tuple[bool, str]:
    try:
        from medforensics.forgery.detector import ForgeryDetector  # noqa: F401
    except ImportError as exc:
        return False, f"medforensics.forgery.detector not importable ({exc})"
    return True, ""


def bench_detect(big: str, repeats: int) -> dict[str, Any]:
    from medforensics.forgery.detector import ForgeryDetector
    from medforensics.io import read_image

    img = read_image(big)
    det = ForgeryDetector.from_run(None)
    out: dict[str, Any] = {}
    for side in (1024, 3072):
        px = img.pixels[:side, :side].copy()
        det.detect(px[:256, :256].copy(), img.meta)  # warm-up
        log(f"detect {side}x{side} x {repeats} ...")
        r = timed(lambda: det.detect(px, img.meta), repeats)
        r.pop("result")
        r["images_per_s"] = 1.0 / r["wall_median_s"]
        r["mpx_per_s"] = side * side / 1e6 / r["wall_median_s"]
        out[f"{side}"] = r
    return out


# ----------------------------------------------------------------------------- children
def child_main(args: argparse.Namespace) -> None:
    """Run one measurement in this fresh process and print one JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    t = time.perf_counter()
    res: dict[str, Any] = {"kind": args.child}
    if args.child == "baseline":  # imports + model loaded, no image
        from medforensics.source.predictor import SourcePredictor

        SourcePredictor.from_run(args.run)
    elif args.child == "decode":
        from medforensics.io import read_image

        res["shape"] = list(read_image(args.file).pixels.shape)
    elif args.child == "identify":
        from medforensics.source.predictor import SourcePredictor, identify_files

        pred = SourcePredictor.from_run(args.run)
        res["verdicts"] = [v.to_dict().get("verdict") for v, _ in
                           identify_files(pred, [args.file])]
    elif args.child == "detect":
        from medforensics.forgery.detector import ForgeryDetector
        from medforensics.io import read_image

        img = read_image(args.file)
        ForgeryDetector.from_run(None).detect(img.pixels, img.meta)
    elif args.child == "soak":
        from medforensics.source.predictor import SourcePredictor, identify_files

        paths = Path(args.file).read_text().split("\n")
        pred = SourcePredictor.from_run(args.run)
        samples = []
        for i, _ in enumerate(identify_files(pred, paths), start=1):
            if i == 1 or i % args.every == 0 or i == len(paths):
                samples.append([i, vmrss_kib()])
        rss = [s[1] for s in samples]
        res.update(n_files=len(paths), every=args.every, samples_kib=samples,
                   first_kib=rss[0], last_kib=rss[-1], max_kib=max(rss))
    res["seconds"] = time.perf_counter() - t
    res["maxrss_kib"] = peak_rss_kib()
    print(json.dumps(res))


def run_child(kind: str, threads: int, timeout: float, **kw: Any) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE), "--child", kind, "--threads", str(threads)]
    for k, v in kw.items():
        cmd += [f"--{k}", str(v)]
    log(f"child: {kind} ...")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        return {"kind": kind, "error": p.stderr.strip().splitlines()[-1:] or ["failed"]}
    return json.loads(p.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- report
GIB = 1024 ** 3


def table(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the Markdown table: name, value, unit, baseline, ratio, goal, note."""
    rows: list[dict[str, Any]] = []
    d = res["decode"]
    raw = d["raw_decode"]["files_per_s"]

    def add(name: str, value: float | str, unit: str, baseline: str = "", ratio: float | None
            = None, goal: str = "", note: str = "") -> None:
        rows.append(dict(name=name, value=value, unit=unit, baseline=baseline, ratio=ratio,
                         goal=goal, note=note))

    n = d["n_files"]
    add("raw header read (pydicom, stop_before_pixels)", d["raw_header"]["files_per_s"],
        "files/s", note=f"{n} files")
    add("raw decode (pydicom dcmread + pixel_array)", raw, "files/s",
        note=f"{d['raw_decode_bytes'] / n / 1e6:.1f} MB/file; the physical floor")
    add("read_image (pixel contract)", d["read_image"]["files_per_s"], "files/s",
        "raw decode", d["read_image"]["files_per_s"] / raw)
    for k, label in (("ingest_1", "ingest, header-only, 1 process"),
                     ("ingest_default", "ingest, header-only, default workers")):
        add(label, d[k]["files_per_s"], "files/s", "raw header read",
            d[k]["files_per_s"] / d["raw_header"]["files_per_s"],
            note=f"{d[k]['files_per_s'] / raw:.2f} x raw decode; includes sha256 of every file")
    idf = res.get("identify")
    if idf:
        for k, v in idf.items():
            if not isinstance(v, dict):
                continue
            label = "identify end to end, in-process" if k == "serial" else \
                f"identify end to end, {k.split('_')[1]} decode-ahead workers"
            cpu = v["cpu_median_s"] + v.get("children_cpu_median_s", 0.0)
            add(label, v["files_per_s"], "files/s", "raw decode", v["files_per_s"] / raw,
                ">= 0.5", f"{idf['preset']} preset, {idf['n_patches']} patches/image; "
                          f"{1e3 * cpu / idf['n_files']:.0f} ms CPU/file (raw decode "
                          f"{1e3 * d['raw_decode']['cpu_median_s'] / n:.1f})")
    jp = res.get("j2k")
    if jp:
        r0, r1 = jp["raw_decode"], jp["identify"]
        add("JPEG 2000 lossless: raw decode", r0["files_per_s"], "files/s",
            note=f"{jp['n_files']} files; {1e3 / r0['files_per_cpu_s']:.0f} ms CPU/file")
        add("JPEG 2000 lossless: identify end to end, in-process", r1["files_per_s"], "files/s",
            "J2K raw decode", r1["files_per_s"] / r0["files_per_s"], ">= 0.5",
            f"{1e3 / r1['files_per_cpu_s']:.0f} ms CPU/file")
    fp = res.get("fingerprints")
    if fp:
        add("identify + unit fingerprints, in-process", fp["files_per_s"], "files/s",
            "raw decode", fp["files_per_s"] / raw, "",
            f"{fp['n_units']} enrolled units; {fp['s_per_file']:.1f} s/file")
    rows += units_table(res)
    tr = res.get("training")
    if tr:
        add("prepare_store (decode once, default workers)", tr["prepare"]["images_per_s"],
            "images/s", "raw decode", tr["prepare"]["images_per_s"] / raw,
            note="with 256x256 paper variants")
        for preset in ("patch", "deep-rsi", "deepmammo"):
            r = tr[preset]
            mo = r["model_only"]["items_per_s"]
            unit = "patches/s" if preset == "patch" else "images/s"
            add(f"train {preset}: model only (random data)", mo, unit,
                note=f"batch {r['model_only']['batch']}")
            for mode in ("decode", "store"):
                c = r.get(f"{mode}_cpu")
                if c:
                    add(f"train {preset}: {epochs_of(r, mode)} epochs {mode}, per CPU-second",
                        c["items_per_cpu_s"], f"{unit[:-2]}/CPU-s", "model only per CPU-s",
                        c["items_per_cpu_s"] / r["model_only"]["items_per_cpu_s"],
                        "store ~ model only" if mode == "store" else "",
                        "CPU time of the whole train() call: robust to other load")
                for ep in r[mode]:
                    what = "decoding" if mode == "decode" else "from the store"
                    note = ("first epoch: decodes every image" if mode == "decode"
                            and ep["epoch"] == 1 else
                            "images in the in-memory LRU" if mode == "decode" else "")
                    add(f"train {preset}: epoch {ep['epoch']}, {what}", ep["items_per_s"], unit,
                        "model only", ep["items_per_s"] / mo,
                        "store ~ model only" if mode == "store" else "", note)
    det = res.get("detect")
    if isinstance(det, dict) and "pending" not in det:
        for side, v in det.items():
            add(f"forgery detect {side}x{side}", v["images_per_s"], "images/s", "raw decode",
                v["mpx_per_s"] / (d["raw_decode_bytes"] / 2 / n / 1e6 * raw),
                note=f"{v['mpx_per_s']:.2f} Mpx/s; ratio in pixels/s")
    else:
        add("forgery detect 1k x 1k / 3k x 3k", "pending", "", note=str(det.get("pending", ""))
            if isinstance(det, dict) else "")
    mem = res.get("memory", {})
    base = mem.get("baseline", {}).get("maxrss_kib")
    for kind, label in (("baseline", "peak RSS: imports + model, no image"),
                        ("decode", "peak RSS: read_image of the 4000x5000 image"),
                        ("identify", "peak RSS: identify one 4000x5000 16-bit image"),
                        ("detect", "peak RSS: detect one 4000x5000 16-bit image")):
        v = mem.get(kind)
        if not v:
            continue
        if "maxrss_kib" not in v:
            add(label, "failed" if kind != "detect" else "pending", "",
                note=" ".join(v.get("error", [])) or str(v.get("pending", "")))
            continue
        gib = v["maxrss_kib"] * 1024 / GIB
        add(label, gib, "GiB", "", None, "<= 1.5 GiB" if kind in ("identify", "detect") else "",
            f"{(v['maxrss_kib'] - base) / 1024:.0f} MiB above the baseline" if base and
            kind != "baseline" else "fresh process, VmHWM")
    soak = mem.get("soak")
    if soak and "first_kib" in soak:
        add(f"RSS over a {soak['n_files']}-file identify run (first / last / max)",
            f"{soak['first_kib'] / 1024:.0f} / {soak['last_kib'] / 1024:.0f} / "
            f"{soak['max_kib'] / 1024:.0f}", "MiB", "first", soak["last_kib"] / soak["first_kib"],
            "flat", f"VmRSS every {soak['every']} files; {soak['seconds']:.0f} s")
    return rows


def units_table(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Table rows of the archive-like unit-pattern section and its peak-RSS children."""
    rows: list[dict[str, Any]] = []

    def add(name: str, value: float | str, unit: str, baseline: str = "", ratio: float | None
            = None, goal: str = "", note: str = "") -> None:
        rows.append(dict(name=name, value=value, unit=unit, baseline=baseline, ratio=ratio,
                         goal=goal, note=note))

    ua = res.get("units_archive")
    if ua:
        rawu = ua["raw_decode"]["files_per_s"]
        what = f"{ua['n_files']} files of {ua['side']} px, {ua['transfer_syntax']}"
        add("archive-like: raw decode (pydicom)", rawu, "files/s",
            note=f"{what}; {1e3 / ua['raw_decode']['files_per_cpu_s']:.0f} ms CPU/file")
        add("archive-like: identify, no units", ua["identify"]["files_per_s"], "files/s",
            "archive raw decode", ua["ratio_identify"], "",
            f"{1e3 / ua['identify']['files_per_cpu_s']:.0f} ms CPU/file")
        st = ua["stage_cpu_ms_per_file"]
        add("archive-like: identify, units enrolled", ua["identify_units"]["files_per_s"],
            "files/s", "archive raw decode", ua["ratio_identify_units"], ">= 0.8",
            f"{ua['n_units']} units, {ua['units_compared_per_file']:.1f} compared per file; "
            f"{1e3 / ua['identify_units']['files_per_cpu_s']:.0f} ms CPU/file: decode "
            f"{st['decode']:.0f}, patches + model {st['model']:.0f}, unit step "
            f"{st['units']:.0f}")
        kw = f"identify_units_workers_{ua['workers']}"
        add(f"archive-like: identify, units enrolled, {ua['workers']} decode-ahead worker(s)"
            + (" (identify's default here)" if ua.get("workers_default") else ""),
            ua[kw]["files_per_s"], "files/s", "archive raw decode",
            ua["ratio_identify_units_workers"], ">= 0.8",
            f"{1e3 / ua[kw]['files_per_cpu_s']:.0f} ms CPU/file with the workers'")
    mem = res.get("memory_units", {})
    base = mem.get("baseline", {}).get("maxrss_kib")
    for kind, label in (("baseline", "peak RSS: imports + model + unit patterns, no image"),
                        ("identify", "peak RSS: identify one 4000x5000 16-bit image, units "
                                     "enrolled")):
        v = mem.get(kind)
        if not v:
            continue
        if "maxrss_kib" not in v:
            add(label, "failed", "", note=" ".join(v.get("error", [])))
            continue
        add(label, v["maxrss_kib"] * 1024 / GIB, "GiB", "", None,
            "<= 0.75 GiB" if kind == "identify" else "",
            (f"{(v['maxrss_kib'] - base) / 1024:.0f} MiB above the baseline; "
             f"{v['seconds']:.1f} s" if base and kind != "baseline" else "fresh process, VmHWM"))
    return rows


def epochs_of(rec: dict[str, Any], mode: str) -> int:
    return len(rec.get(mode, []))


def markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = [
        f"Command: `{res['command']}`  ",
        f"Machine: {m['usable_cpus']} usable CPUs ({m['cpu_model']}), {m['mem_total']}, torch "
        f"threads {m['torch_threads']}; load average at start "
        f"{', '.join(f'{x:.1f}' for x in m['load_average_start'])}, at end "
        f"{', '.join(f'{x:.1f}' for x in res['load_average_end'])}; commit {m['git_commit']}; "
        f"{res['seconds']:.0f} s in all.  ",
        f"Speeds: median of {res['repeats']} runs (wall clock).",
        "",
        "| measurement | value | unit | baseline | ratio | goal | notes |",
        "|---|---:|---|---|---:|---|---|",
    ]
    for r in res["table"]:
        v = r["value"]
        vs = (f"{v:.3g}" if v < 10 else f"{v:,.0f}") if isinstance(v, float) else str(v)
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
        lines.append(f"| {r['name']} | {vs} | {r['unit']} | {r['baseline']} | {ratio} | "
                     f"{r['goal']} | {r['note']} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small images, few files (minutes)")
    ap.add_argument("--out", default=str(HERE.parent / "out"))
    ap.add_argument("--work", default=None, help="generated data (default OUT/work)")
    ap.add_argument("--repeats", type=int, default=None, help="default 3 (quick: 1)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--workers", type=int, default=None,
                    help="decode-ahead workers to measure with units (default: identify's "
                         "default for the batch, see common.runtime.decode_workers)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--skip", default="",
                    help="comma list: training,j2k,fingerprints,units,memory,soak")
    ap.add_argument("--units-only", action="store_true",
                    help="only the archive-like unit-pattern section and its peak RSS")
    # child mode (internal)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--run", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--file", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--every", type=int, default=100, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_main(args)
        return

    import logging

    import torch

    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(args.threads)
    t_all = time.perf_counter()
    out = Path(args.out)
    work = Path(args.work) if args.work else out / "work"
    work.mkdir(parents=True, exist_ok=True)
    quick = args.quick
    repeats = args.repeats or (1 if quick else 3)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    res: dict[str, Any] = {
        "command": "python bench/run.py " + " ".join(sys.argv[1:]),
        "quick": quick, "repeats": repeats, "machine": machine_info(args.threads),
    }
    if args.units_only:
        res["units_archive"] = units_section(work, repeats, quick, args.threads, res,
                                             args.workers)
        finish(res, out, t_all, units_table(res))
        return
    n_files, size = (16, (600, 900)) if quick else (60, (1500, 2500))
    files = ensure_archive(work, n_files=n_files, size=size, seed=args.seed)
    res["archive"] = {"root": str(Path(files[0]).parents[2]), "n_files": len(files), "size_range": list(size),
                      "transfer_syntax": "explicit VR little endian (uncompressed)"}
    res["decode"] = bench_ingest_decode(files, repeats)

    # the identify model: the patch run trained (decoding) in the training section, or a
    # quick 1-epoch run when training is skipped
    if "training" not in skip:
        res["training"] = bench_training(files, work, quick)
        run = res["training"]["patch"]["decode_run"]
    else:
        from medforensics.data.manifest import ingest
        from medforensics.training.engine import train

        rows = ingest(files, workers=1, progress=False)
        for r in rows:
            r["split"] = "train" if r["status"] == "eligible" else ""
        run = str(work / "train_patch_quick")
        import shutil

        shutil.rmtree(run, ignore_errors=True)
        train(rows, out_dir=run, preset="patch", epochs=1, patches_per_image=8, progress=False)
    res["identify"] = bench_identify(run, files, repeats,
                                     2 if args.workers is None else args.workers)
    if "j2k" not in skip:
        try:
            jfiles = ensure_archive(work, n_files=4 if quick else 12, size=size, seed=args.seed,
                                    transfer_syntax="j2k")
            res["j2k"] = bench_compressed(run, jfiles, repeats)
        except Exception as exc:  # noqa: BLE001 - no J2K encoder: skip the row, say why
            log(f"JPEG 2000 rows skipped: {exc}")
            res["j2k_skipped"] = str(exc)
    if "fingerprints" not in skip:
        res["fingerprints"] = bench_fingerprints(run, files, work, 4 if quick else 8)
    if "units" not in skip:
        res["units_archive"] = units_section(work, repeats, quick, args.threads, res,
                                             args.workers)

    ok, why = detector_available()
    big = ensure_big_image(work, files[0])
    res["detect"] = bench_detect(big, repeats) if ok else {"pending": why}
    mem: dict[str, Any] = {"image": big, "shape": [4000, 5000]}
    if "memory" not in skip:
        to = 1800.0
        mem["baseline"] = run_child("baseline", args.threads, to, run=run)
        mem["decode"] = run_child("decode", args.threads, to, file=big)
        mem["identify"] = run_child("identify", args.threads, to, run=run, file=big)
        mem["detect"] = (run_child("detect", args.threads, to, file=big) if ok
                         else {"pending": why})
    if "soak" not in skip:
        n_soak = 200 if quick else 2000
        lst = work / "soak_paths.txt"
        lst.write_text("\n".join(files[i % len(files)] for i in range(n_soak)))
        mem["soak"] = run_child("soak", args.threads, 7200.0, run=run, file=lst,
                                every=20 if quick else 100)
        mem["soak"]["note"] = f"the {len(files)} archive files cycled to {n_soak} paths"
    res["memory"] = mem
    finish(res, out, t_all, table(res))


def units_section(work: Path, repeats: int, quick: bool, threads: int,
                  res: dict[str, Any], workers: int | None = None) -> dict[str, Any]:
    """The archive-like unit-pattern speeds, and peak RSS children into ``res``."""
    side = 1024 if quick else 2048
    ua = bench_units_archive(work, repeats, n_query=8 if quick else 40, side=side,
                             workers=workers)
    files = ensure_archive(work, n_files=ua["n_files"] + 8, size=(side, side), seed=5,
                           transfer_syntax="j2k")
    big = ensure_big_image(work, files[0])
    run = str(work / f"run_units_{side}_fingerprints")
    res["memory_units"] = {"image": big,
                           "baseline": run_child("baseline", threads, 1800.0, run=run),
                           "identify": run_child("identify", threads, 1800.0, run=run,
                                                 file=big)}
    return ua


def finish(res: dict[str, Any], out: Path, t_all: float, rows: list[dict[str, Any]]) -> None:
    """Write ``bench.json`` and ``bench.md`` and print the table."""
    res["load_average_end"] = list(os.getloadavg())
    res["seconds"] = time.perf_counter() - t_all
    res["table"] = rows
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(res, indent=1, default=str))
    md = markdown(res)
    (out / "bench.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
