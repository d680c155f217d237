"""The codec seen from fresh interpreters: stable hashes, no pydantic import.

Split out of tests/unit/test_codec.py: these start Python subprocesses, and
unit tests start none.
"""

from __future__ import annotations

import os
import subprocess
import sys


def test_args_are_canonical_so_their_hash_is_stable_across_processes() -> None:
    # Set order follows string hashing, which differs per process (PYTHONHASHSEED).
    script = (
        "from keel.core import codec\n"
        "def f(tags: set[str], meta: dict[str, int], ids: dict[int, str]) -> None: ...\n"
        "data = codec.encode_args(f, ({'x', 'y', 'z', 'w'}, {'b': 1, 'a': 2}, {2: 'b', 1: 'a'}),"
        " {}, what='f')\n"
        "print(data.decode(), codec.args_hash(data))\n"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        for seed in (1, 2, 3)
    }
    assert len(outputs) == 1
    assert outputs.pop().startswith(
        '{"ids":{"2":"b","1":"a"},"meta":{"a":2,"b":1},"tags":["w","x","y","z"]} '
    )


def test_codec_does_not_import_pydantic() -> None:
    # Run in a fresh interpreter: pydantic is already imported in this one.
    script = (
        "import sys, keel.core.codec as c; c.roundtrip([1], list[int]); "
        "c.decode_args(lambda a: a, c.encode_args(lambda a: a, (1,), {}, what='f'), what='f'); "
        "assert 'pydantic' not in sys.modules, 'pydantic was imported'"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
