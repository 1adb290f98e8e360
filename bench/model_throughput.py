"""Training throughput of a registered model on random data (CPU or GPU).

    python bench/model_throughput.py patch --batch 64 --size 64 --threads 1

Prints items/s for full training steps (forward, cross-entropy, backward, Adam step,
constrained-layer projection); the numbers in the docs were produced this way.
"""

from __future__ import annotations

import argparse

from medforensics.models.bench import training_throughput


def _main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    r = training_throughput(args.name, batch=args.batch, size=args.size, steps=args.steps,
                            threads=args.threads)
    print(f"{args.name}: {r['items_per_s']:.0f} items/s wall, {r['items_per_cpu_s']:.0f} items per "
          f"CPU-second (training, batch {r['batch']}, {r['size']}px, {r['threads']} thread(s), "
          f"{r['seconds_per_step'] * 1e3:.1f} ms/step)")


if __name__ == "__main__":
    _main()
