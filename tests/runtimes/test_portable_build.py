"""The native library travels (issue 14): built without -march=native, baseline x86-64 everywhere except the per-ISA
translation units, which run only where CPUID says so; and its baseline path (what an AVX2-only CPU runs) computes
the same as the AVX-512 one ($DEBX_CPU_ISA=baseline forces it here)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from debx.runtimes import native_ops

needs_native = pytest.mark.skipif(not native_ops.available(), reason="no C++ compiler for the native ops")
ROOT = Path(__file__).resolve().parents[2]


ISA_FLAG = re.compile(r"^-m(avx|amx|fma|sse4|bmi|f16c)")
ISA_UNITS = ("matMulInt8Avx2.cpp", "matMulInt8AvxVnni.cpp", "matMulInt8Vnni.cpp", "matMulInt8Amx.cpp", "isaAvx512.cpp",
             "isaAmx.cpp", "isaAvx512Bf16.cpp", "isaAvx512Bf16Emu.cpp")


def test_no_flag_ties_the_library_to_the_build_machine(cmake_configured):
    """What CMake compiles (compile_commands.json of the build debx runs): no -march/-mtune=native anywhere,
    ISA flags on the CPUID-dispatched units only, and those units linked last (the link keeps the baseline copy
    of an inline function both kinds emit)."""
    import json
    import shlex

    build_dir = cmake_configured[0]
    units = {Path(c["file"]).name: shlex.split(c["command"])
             for c in json.loads((build_dir / "compile_commands.json").read_text())}
    assert set(ISA_UNITS) <= set(units)
    for name, cmd in units.items():
        assert not [f for f in cmd if f.startswith(("-march", "-mtune", "-mcpu"))], name
        isa = [f for f in cmd if ISA_FLAG.match(f)]
        assert bool(isa) == (name in ISA_UNITS), (name, isa)
    assert "-mamx-int8" in units["matMulInt8Amx.cpp"] and "-mavx512vnni" in units["matMulInt8Vnni.cpp"]
    assert "-mavxvnni" in units["matMulInt8AvxVnni.cpp"]
    # the attention's avx512-bf16 unit has the instructions; its emulation twin must not (it runs where they are absent)
    assert "-mavx512bf16" in units["isaAvx512Bf16.cpp"] and "-mavx512bf16" not in units["isaAvx512Bf16Emu.cpp"]
    assert not [f for f in units["matMulInt8Avx2.cpp"] + units["matMulInt8AvxVnni.cpp"] if f.startswith("-mavx512")]
    if (build_dir / "build.ninja").is_file():
        link = subprocess.run(["ninja", "-C", str(build_dir), "-t", "commands", native_ops.TARGET], capture_output=True,
                              text=True, check=True).stdout.strip().splitlines()[-1]
        objects = [Path(w).name.removesuffix(".o") for w in shlex.split(link) if w.endswith(".o")]
        assert len(objects) == len(units) and set(objects[-len(ISA_UNITS):]) == set(ISA_UNITS), objects
    cmake = [ln.split("#")[0] for ln in (ROOT / "plugins" / "CMakeLists.txt").read_text().splitlines()]
    assert not [ln for ln in cmake if "-march" in ln]


@needs_native
@pytest.mark.skipif(shutil.which("objdump") is None, reason="no objdump to read the library's code")
def test_only_the_isa_units_hold_vector_instructions():
    """Every function with a VEX/EVEX instruction (AVX and later) or an AMX tile instruction belongs to an ISA unit:
    the debx_avx512 twins, the attention's avx512-bf16 units (debx_avx512bf16, debx_avx512bf16emu) or the INT8 matmul
    kernels (matMulInt8Amx.cpp / matMulInt8Vnni.cpp / the 256-bit kernel of matMulInt8Avx2.cpp and
    matMulInt8AvxVnni.cpp)."""
    wide = set(_disassembly())
    allowed = re.compile(r"debx_avx512(bf16|bf16emu)?::|debx::int8::\(anonymous namespace\)::(runTaskAs|runTaskYmm|epilogueSlice)")
    assert wide, "no vector code at all: the ISA units were not compiled for their instructions"
    assert not [f for f in wide if not allowed.search(f)]


def _disassembly() -> dict[str, list[str]]:
    """{function: its instructions} for every function of the library with a VEX/EVEX or AMX instruction."""
    out = subprocess.run(["objdump", "-d", "-C", "--no-show-raw-insn", str(native_ops.library_path())],
                         capture_output=True, text=True, check=True).stdout
    fn, code = None, {}
    for line in out.splitlines():
        m = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if m:
            fn = m.group(1)
        elif fn and re.search(r"\t(\{vex\} |\{evex\} )?(v[a-z0-9]+|t[a-z]*tile[a-z0-9]*|tdp[a-z0-9]+)\s", line):
            code.setdefault(fn, []).append(line)
    return code


@needs_native
@pytest.mark.skipif(shutil.which("objdump") is None, reason="no objdump to read the library's code")
def test_the_bf16_units_hold_their_instructions():
    """The attention's avx512-bf16 unit multiplies with VDPBF16PS and converts with VCVTNE2PS2BF16 (read here, where
    it cannot run); its emulation twin, which the tests run on CPUs without AVX-512 BF16, holds neither."""
    code = _disassembly()
    text = {ns: "\n".join(ln for fn, lines in code.items() if re.search(rf"(^| ){ns}::", fn) for ln in lines)
            for ns in ("debx_avx512bf16", "debx_avx512bf16emu")}
    # 8 rows x 2 column blocks of sums in registers: 16 VDPBF16PS in the products' inner step
    assert text["debx_avx512bf16"].count("vdpbf16ps") >= 16 and "vcvtne2ps2bf16" in text["debx_avx512bf16"]
    assert text["debx_avx512bf16emu"] and not re.search(r"vdpbf16ps|vcvtne2ps2bf16|vcvtneps2bf16",
                                                        text["debx_avx512bf16emu"])


@needs_native
@pytest.mark.skipif(shutil.which("objdump") is None, reason="no objdump to read the library's code")
def test_the_256_bit_families_need_no_avx512():
    """The avx2 and avx-vnni kernels run on CPUs without AVX-512: no ZMM, no mask registers, no EVEX-only YMM16-31,
    and avx-vnni multiplies with the VEX VPDPBUSD (AVX-VNNI), avx2 with VPMADDWD and no VPDPBUSD at all."""
    code = _disassembly()
    kernels = {"Avx2": [], "AvxVnni": []}
    for fn, lines in code.items():
        m = re.search(r"runTaskYmm<debx::int8::\(anonymous namespace\)::(Avx2|AvxVnni),", fn)
        if m:
            kernels[m.group(1)] += lines
    assert kernels["Avx2"] and kernels["AvxVnni"], "the 256-bit kernels were not compiled"
    for name, lines in kernels.items():
        text = "\n".join(lines)
        assert not re.search(r"zmm|%k[0-7]|ymm(1[6-9]|2[0-9]|3[01])|\{evex\}", text), name
    assert "{vex} vpdpbusd" in "\n".join(kernels["AvxVnni"])
    assert "vpmaddwd" in "\n".join(kernels["Avx2"]) and "vpdpbusd" not in "\n".join(kernels["Avx2"])


@needs_native
def test_the_baseline_path_matches_the_reference():
    """The attention, LayerNormalization + QuantizeLinear and the INT8 rewrite as a CPU without AVX-512 runs them."""
    env = {**os.environ, "DEBX_CPU_ISA": "baseline", "PYTHONPATH": str(ROOT)}
    probe = subprocess.run([sys.executable, "-c", "from debx.runtimes import native_ops, int8_cpu; "
                            "print(native_ops.isa(), int8_cpu.kernel_family())"],
                           env=env, capture_output=True, text=True, check=True)
    assert probe.stdout.split() == ["baseline", "ort"]
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/runtimes/test_native_ops.py::test_native_matches_the_reference",
                           "tests/runtimes/test_native_ops.py::test_trailing_padding_is_skipped_without_changing_a_float",
                           "tests/runtimes/test_native_ops.py::test_padded_keys_count_where_the_scores_come_near_the_mask_fill",
                           "tests/runtimes/test_int8_cpu.py::test_layernorm_quantize_matches_onnx_runtime",
                           "tests/runtimes/test_int8_cpu.py::test_nothing_to_rewrite_means_the_file_as_it_is"],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert " passed" in proc.stdout
