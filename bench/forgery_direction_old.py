"""Copy-move direction of an older detector on the saved clone edits of a forgery_independent run.

    git archive aa1e511 src | tar -x -C /tmp/old      # the detector before the evidence rule
    PYTHONPATH=/tmp/old/src python bench/forgery_direction_old.py sim bench/out/indep_dir_sim
    PYTHONPATH=/tmp/old/src python bench/forgery_direction_old.py real bench/out/indep_dir_real

The runs must have been made with ``--kinds clone,clone-rot90,clone-mirror,clone-rotated,
clone-rotated-nn,clone-scaled`` (``--n 48`` for ``sim``, ``--real`` for ``real``) and the
default seed, so that replaying the bench's random draws gives each saved file's truth. The
detector on the path (the older code) is asked for its copy-move regions
(``compute_cues(...).details["copymove"]["regions"]``: ``target_side``), scored with this
repository's ``forgery_independent._direction``; writes ``/tmp/old_dir_<mode>.json`` and prints
found / claimed / right per kind.
"""
import csv
import json
import sys
from pathlib import Path

import numpy as np
import pydicom



def main() -> None:
    mode, out_dir = sys.argv[1], Path(sys.argv[2])
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import forgery_independent as fi  # this repository's edits and scorer
    from medforensics.forgery.detector import ForgeryDetector  # the older code (PYTHONPATH)
    from medforensics.io import read_image
    kinds = "clone,clone-rot90,clone-mirror,clone-rotated,clone-rotated-nn,clone-scaled".split(",")
    if mode == "real":
        rows = fi._real_rows()
        n = len(rows)
    else:
        rows = [r for r in csv.DictReader(open("bench/out/forgery/work/manifest.csv")) if r["split"] == "test" and r["status"] == "eligible"]
        n = 48
    det = ForgeryDetector.from_run(None)
    rng = np.random.default_rng(7)
    cache = {}
    def px(p):
        if p not in cache:
            ds = pydicom.dcmread(p)
            if ds.file_meta.TransferSyntaxUID.is_compressed: ds.decompress()
            cache[p] = ds.pixel_array
        return cache[p]
    outc = {}
    for kind in kinds:
        picks = rng.permutation(len(rows))[:n]
        for j, i in enumerate(picks.tolist()):
            r = rows[i]
            stored = px(r["path"])
            others = [o for o in rows if o["model"] != r["model"]]
            donor = px(others[int(rng.integers(len(others)))]["path"])
            _, _, truth = fi._edit(kind, stored.astype(np.float64), donor, rng)
            img = read_image(out_dir / f"{kind}_{i:03d}.dcm")
            loc = det.compute_cues(img.pixels, lossy=False, bits_stored=img.meta.bits_stored)
            pairs = []
            for g in loc.details.get("copymove", {}).get("regions", []):
                side = g.get("target_side") or ""
                a, b = g.get("bbox_a"), g.get("bbox_b")
                pairs.append({"bbox_a": a, "bbox_b": b, "direction": {"a": "b->a", "b": "a->b"}.get(side, "undetermined"),
                              "pasted_bbox": b if side == "b" else a if side == "a" else None})
            outc.setdefault(kind, []).append(fi._direction(pairs, truth, img.pixels.shape))
        print(kind, outc[kind].count("right"), outc[kind].count("wrong"), flush=True)
    summ = fi.direction_summary(outc)
    json.dump({"outcomes": outc, "summary": summ}, open(f"/tmp/old_dir_{mode}.json", "w"), indent=1)
    for k, v in summ.items():
        print(k, v["found"], v["claimed"], v["right"])


if __name__ == "__main__":
    main()
