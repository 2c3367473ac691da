"""Photo intake memory: peak resident memory growth and time to normalize bombs and large photos, per case.

Each file is built here and normalized in a fresh interpreter that only reads it (building it there would
leave freed memory in the heap for the decode to reuse), warms the codecs on small photos, resets the
peak-RSS mark (Linux ``/proc/self/clear_refs``): the growth of ``VmHWM`` over the resident size before the
call is what the photo cost. A refused photo shows the reply the user would get.
Usage: python -m benchmarks.intake [--case NAME …]
"""

from __future__ import annotations

import argparse
import io
import json
import re
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

from PIL import Image

MIB = 2**20
TARGET_MIB = 64


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int, color_type: int = 2) -> bytes:
    """A whole, valid PNG of one flat colour: tiny on the wire, ``width × height`` pixels once decoded."""
    bands = {0: 1, 2: 3, 6: 4}[color_type]
    row = b"\0" + b"\x80" * (width * bands)
    squeeze = zlib.compressobj(9)
    body = b"".join(squeeze.compress(row) for _ in range(height)) + squeeze.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def gradient(size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    """A smooth picture that compresses like a photo's sky, built without holding a second copy."""
    small = Image.linear_gradient("L").resize((64, 64))
    bands = [small, small.transpose(Image.Transpose.ROTATE_90), small.transpose(Image.Transpose.ROTATE_180)]
    return Image.merge("RGB", bands).resize(size, Image.Resampling.BILINEAR).convert(mode)


def jpeg(size: tuple[int, int], **options: object) -> bytes:
    out = io.BytesIO()
    gradient(size).save(out, format="JPEG", quality=85, **options)
    return out.getvalue()


def encoded(size: tuple[int, int], fmt: str, mode: str = "RGB", **options: object) -> bytes:
    out = io.BytesIO()
    gradient(size, mode).save(out, format=fmt, **options)
    return out.getvalue()


CASES: dict[str, Callable[[], bytes]] = {
    "50-MP PNG bomb (RGB)": lambda: png_bomb(7071, 7071),
    "50-MP PNG bomb (grey)": lambda: png_bomb(7071, 7071, color_type=0),
    "50-MP PNG bomb (RGBA)": lambda: png_bomb(7071, 7071, color_type=6),
    "12-MP PNG bomb (RGBA)": lambda: png_bomb(4000, 3000, color_type=6),
    "8-MP PNG bomb (RGB)": lambda: png_bomb(3264, 2448),
    "30-MP PNG bomb (grey)": lambda: png_bomb(6000, 5000, color_type=0),
    "50-MP WebP bomb": lambda: encoded((7071, 7071), "WEBP", lossless=True),
    "2-MP WebP": lambda: encoded((1920, 1080), "WEBP"),
    "50-MP JPEG, baseline": lambda: jpeg((8660, 5773)),
    "50-MP JPEG, progressive": lambda: jpeg((8660, 5773), progressive=True),
    "12-MP JPEG, baseline": lambda: jpeg((4000, 3000)),
    "12-MP JPEG, progressive": lambda: jpeg((4000, 3000), progressive=True),
    "12-MP JPEG, progr. 4:4:4": lambda: jpeg((4000, 3000), progressive=True, subsampling=0),
    "9-MP JPEG, square": lambda: jpeg((3070, 3070)),
    "4-MP JPEG, 2400 square": lambda: jpeg((2400, 2400)),
}


def _memory_kib() -> tuple[int, int]:
    status = Path("/proc/self/status").read_text()
    rss = re.search(r"VmRSS:\s+(\d+)", status)
    peak = re.search(r"VmHWM:\s+(\d+)", status)
    assert rss and peak
    return int(rss.group(1)), int(peak.group(1))


def measure(path: str) -> dict[str, object]:
    """Run in the child: warm up, then normalize the file once and report what it cost."""
    from bot.errors import UserError
    from bot.intake import normalize_photo

    with open(path, "rb") as file:
        data = file.read()
    for warm_up in (jpeg((512, 512)), jpeg((512, 512), progressive=True), encoded((512, 512), "PNG")):
        normalize_photo(warm_up)
    normalize_photo(encoded((512, 512), "WEBP"))
    with open("/proc/self/clear_refs", "w") as marks:
        marks.write("5")
    before, _ = _memory_kib()
    started = time.perf_counter()
    try:
        out = normalize_photo(data)
        outcome = f"accepted, {Image.open(io.BytesIO(out)).size}"
    except UserError as refused:
        outcome = f"refused: {refused.message}"
    elapsed = time.perf_counter() - started
    _, peak = _memory_kib()
    return {"bytes": len(data), "growth_mib": (peak - before) / 1024, "ms": elapsed * 1000, "outcome": outcome}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="run only these cases")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child)))
        return
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.case or list(CASES):
            path = Path(folder, "photo")
            path.write_bytes(CASES[name]())
            done = subprocess.run(
                [sys.executable, "-m", "benchmarks.intake", "--child", str(path)],
                capture_output=True,
                text=True,
                check=True,
            )
            rows.append((name, json.loads(done.stdout.strip().splitlines()[-1])))
    print(f"{'case':<28} {'file':>9} {'peak RSS growth':>16} {'time':>9}  outcome")
    for name, row in rows:
        flag = "" if float(str(row["growth_mib"])) < TARGET_MIB else "  (over target)"
        print(
            f"{name:<28} {int(str(row['bytes'])) / 1024:>7.0f}Ki {float(str(row['growth_mib'])):>12.1f} MiB"
            f" {float(str(row['ms'])):>7.0f}ms  {str(row['outcome'])[:90]}{flag}"
        )
    print(f"target: peak growth under {TARGET_MIB} MiB per photo")


if __name__ == "__main__":
    main()
