"""The C++ tokenizer as an installed CMake package: `cmake --install` writes the library, its header and
debxConfig.cmake; a program outside the tree (plugins/runtime/examples/tokenize_tsv) finds it with
find_package(debx), links debx::tokenizer, and tokenizes the SST-2 dev set exactly as transformers does, also from
8 threads sharing one tokenizer."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from plugin_helpers import PLUGINS, SHARED, SPM, cmake_build, require, run

GLUE = Path(os.environ.get("GLUE_DIR", SHARED / "glue"))


@pytest.mark.slow
def test_installed_tokenizer_links_and_matches_transformers(tmp_path):
    missing = [h for h in ("sentencepiece_processor.h", "utf8proc.h", "nlohmann/json.hpp")
               if not any((Path(d) / h).is_file() for d in ("/usr/include", "/usr/local/include"))]
    require(not missing, f"runtime dependencies missing ({', '.join(missing)})")
    require(SPM.is_file(), f"{SPM} not found")
    dev = GLUE / "SST-2" / "dev.tsv"
    require(dev.is_file(), f"{dev} not found")

    build, prefix = tmp_path / "build", tmp_path / "prefix"
    options = {"DEBX_BUILD_PLUGINS": "OFF", "DEBX_BUILD_TESTS": "OFF", "DEBX_BUILD_HOST": "OFF",
               "DEBX_BUILD_ORT_OPS": "OFF", "DEBX_BUILD_RUNTIME": "ON"}
    cmake_build(build, ["debx_tokenizer", "debx_tokenize"], options)
    run(["cmake", "--install", str(build), "--prefix", str(prefix)])
    installed = {str(p.relative_to(prefix)) for p in prefix.rglob("*") if p.is_file()}
    for want in ("include/debx/tokenizer.h", "lib/libdebx_tokenizer.a", "bin/debx_tokenize",
                 "lib/cmake/debx/debxConfig.cmake", "lib/cmake/debx/debxConfigVersion.cmake",
                 "lib/cmake/debx/debxTargets.cmake"):
        assert want in installed, (want, sorted(installed))

    example = tmp_path / "example"
    run(["cmake", "-S", str(PLUGINS / "runtime" / "examples" / "tokenize_tsv"), "-B", str(example),
         f"-DCMAKE_PREFIX_PATH={prefix}", "-DCMAKE_BUILD_TYPE=Release"])
    run(["cmake", "--build", str(example), "-j2"])
    p = subprocess.run([str(example / "tokenize_tsv"), str(SPM), str(dev), "0", "128"], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    got = [[int(t) for t in line.split()] for line in p.stdout.splitlines()]

    from transformers import DebertaV2Tokenizer

    tok = DebertaV2Tokenizer.from_pretrained(str(SPM.parent))
    rows = [ln.split("\t")[0] for ln in dev.read_text(encoding="utf-8-sig").split("\n")[1:] if ln]
    want = [tok(r, truncation=True, max_length=128)["input_ids"] for r in rows]
    assert len(got) == len(want) == 872
    differ = [i for i, (g, w) in enumerate(zip(got, want)) if g != w]
    assert not differ, f"{len(differ)} of {len(want)} rows differ, first: {rows[differ[0]]!r}"

    # one tokenizer shared by 8 threads gives the single-threaded ids (tokenizer.h's thread-safety note)
    p = subprocess.run([str(example / "tokenize_threads"), str(SPM), str(dev), "8"], capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr
    assert "8 threads x 2616 encodings: identical" in p.stdout
