"""Hostile model files against the firmware generator and the emulator (issue 25, items 1, 2 and 5).

A node or tensor name in a model file is data: it may close a C comment, open a preprocessor line or define a
symbol, and none of it may reach the compiler as code. The guest runs without semihosting, so code in it cannot
open a host file. A folder tinyflow did not create is never deleted. Folding constants is bounded.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from conftest import REPO, cli_env
from tinyflow.firmware import build

MODELS = REPO / "tests" / "data" / "models"
AD01 = MODELS / "ad01_int8.onnx"
needs_tools = pytest.mark.skipif(bool(build.missing_tools()), reason="arm-none-eabi-gcc / qemu-system-arm missing")
SYMBOL = "tf_injected_symbol"


def _hostile_copy(tmp_path: Path, marker: Path) -> Path:
    """ad01 with its first compute node renamed to close the comment and define a symbol, an unnamed node whose
    output tensor opens a preprocessor line, and a name that would write a host file over semihosting."""
    model = onnx.load(str(AD01))
    nodes = [n for n in model.graph.node if n.op_type in ("Conv", "MatMul", "Gemm", "Relu")]
    payload = (
        f'pwn */ int {SYMBOL} = 1; void tf_evil(void) {{ const char *p = "{marker}"; '
        'register int r0 __asm__("r0") = 1; __asm__ volatile("bkpt 0xab" :: "r"(r0), "r"(p)); } /*'
    )
    nodes[0].name = payload
    target = nodes[1]
    old = target.output[0]
    new = f'i */\n#include "/etc/hostname"\n#define {SYMBOL}_2 1\n/*'
    target.name = ""
    target.output[0] = new
    for n in model.graph.node:
        for k, name in enumerate(n.input):
            if name == old:
                n.input[k] = new
    path = tmp_path / "hostile.onnx"
    onnx.save(model, str(path))
    return path


def _firmware(tmp_path: Path, model: Path, run_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "tinyflow.firmware", f"network.path={model}", "firmware.images=4", "tracking=none"]
    cmd += ["output=json", f"hydra.run.dir={run_dir}", *extra]
    return subprocess.run(cmd, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=600)


@needs_tools
@pytest.mark.slow
def test_names_in_a_model_file_never_reach_the_compiler_as_code(tmp_path):
    marker = tmp_path / "written_by_the_guest"
    hostile = _hostile_copy(tmp_path, marker)
    res = _firmware(tmp_path, hostile, tmp_path / "run")
    assert res.returncode == 0, res.stderr[-2000:]
    import json

    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result["bit_exact"] == result["images"] == 4
    elf = Path(result["project_dir"]) / "firmware.elf"
    symbols = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True, check=True).stdout
    assert SYMBOL not in symbols and "tf_evil" not in symbols
    sources = "\n".join(p.read_text() for p in Path(result["project_dir"]).glob("*.[ch]"))
    directives = [line.strip() for line in sources.splitlines() if line.lstrip().startswith("#")]
    assert not any("/etc/" in d or SYMBOL in d for d in directives)  # no preprocessor line from the file's names
    assert not marker.exists()


def _guest_that_opens(folder: Path, host_path: Path) -> Path:
    """A firmware whose model, instead of computing, asks the debugger (semihosting SYS_OPEN, mode "w") to create
    `host_path` on the host, then writes to it."""
    from tinyflow.firmware.linker import target

    model_c = f"""#include <stdint.h>
#include <string.h>
#include "model.h"
int tf_model_run(const int8_t *input, int8_t *output) {{
    static const char name[] = "{host_path}";
    uint32_t args[3] = {{(uint32_t)name, 4u, (uint32_t)(sizeof name - 1)}};
    register int32_t r0 __asm__("r0") = 1;
    register void *r1 __asm__("r1") = args;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    memcpy(output, input, TF_OUTPUT_BYTES);
    return 0;
}}
"""
    model_h = "#include <stdint.h>\n#define TF_INPUT_BYTES 16\n#define TF_OUTPUT_BYTES 16\n"
    model_h += "int tf_model_run(const int8_t *input, int8_t *output);\n"
    from tinyflow.device import Device
    from tinyflow.firmware import linker
    from tinyflow.firmware.codegen import CSources

    tgt = target("cortex_m7")
    flags = build.compile_flags(tgt, "-O2")
    sources = CSources({"model.c": model_c, "model.h": model_h, "tf_kernels.h": ""}, 0, 0, 16, 16)
    device = Device("board", 512, 1024, "cortex_m7", 216)
    build.write_project(folder, sources, linker.device_script(device, 2048), flags)
    objs = build.compile_objects(folder, flags)
    return build.link(folder, objs, flags, "target/device.ld", "firmware.elf")


@needs_tools
def test_a_guest_cannot_open_a_host_path(tmp_path):
    """Code in the firmware that issues a semihosting SYS_OPEN of a host path writes nothing on the host: the
    emulator runs without semihosting, so the request is a fault, reported as one."""
    from tinyflow.firmware.emulator import EmulatorError, run_images

    host_file = tmp_path / "outside" / "pwned.txt"
    host_file.parent.mkdir()
    elf = _guest_that_opens(tmp_path / "fw", host_file)
    with pytest.raises(EmulatorError, match="fault"):
        run_images(elf, "mps2-an500", np.zeros((2, 16), np.int8), 16, 60)
    assert not host_file.exists() and not list(host_file.parent.iterdir())


@needs_tools
def test_an_existing_firmware_folder_is_not_deleted(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "firmware").mkdir(parents=True)
    mine = run_dir / "firmware" / "driver.c"
    mine.write_text("/* the user's own driver */\n")
    res = _firmware(tmp_path, AD01, run_dir)
    assert mine.read_text() == "/* the user's own driver */\n"
    assert res.returncode in (0, 1) and "Traceback" not in res.stderr


def _folding_bomb(path: Path, n: int, adds: int) -> None:
    from onnx import TensorProto, helper, numpy_helper

    a = numpy_helper.from_array(np.ones((n, 1), np.float32), "a")
    b = numpy_helper.from_array(np.ones((1, n), np.float32), "b")
    nodes, prev = [], "a"
    for i in range(adds):
        nodes.append(helper.make_node("Add", [prev, "b"], [f"s{i}"], name=f"add{i}"))
        prev = f"s{i}"
    nodes.append(helper.make_node("Relu", ["x"], ["y"], name="relu"))
    nodes.append(helper.make_node("Add", ["y", prev], ["z"], name="use"))
    graph = helper.make_graph(
        nodes,
        "bomb",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [n, n])],
        [a, b],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


@pytest.mark.skipif(not Path("/usr/bin/time").exists(), reason="/usr/bin/time is not installed")
def test_constant_folding_is_bounded(tmp_path):
    """A 96 KB file whose chained Adds of an N×1 and a 1×N constant would fold into N² floats each: the import
    stays under 500 MB of resident memory and ends in a result or one paragraph."""
    bomb = tmp_path / "bomb.onnx"
    _folding_bomb(bomb, 12_000, 4)
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "tinyflow.analyze", "network=onnx", f"network.path={bomb}"]
    cmd += ["tracking=none"]
    cmd += [f"hydra.run.dir={tmp_path / 'run'}"]
    res = subprocess.run(cmd, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300)
    rss_kb = int(next(line for line in res.stderr.splitlines() if "Maximum resident" in line).split()[-1])
    assert rss_kb < 500 * 1024, f"max RSS {rss_kb / 1024:.0f} MB"
    assert "Traceback" not in res.stderr
    assert os.path.getsize(bomb) < 200 * 1024


def test_a_huge_model_file_is_refused_before_it_is_read(tmp_path):
    """A 1 GB file (sparse: no disk used) is one paragraph, without reading it."""
    from tinyflow.ir.onnx_import import OnnxImportError, from_onnx

    huge = tmp_path / "huge.onnx"
    with open(huge, "wb") as f:
        f.truncate(1 << 30)
    with pytest.raises(OnnxImportError, match="up to 256 MB"):
        from_onnx(huge)


def _one_paragraph(res: subprocess.CompletedProcess[str], *words: str) -> None:
    assert res.returncode != 0 and "Traceback" not in res.stderr and "bug in tinyflow" not in res.stderr
    text = " ".join(res.stderr.replace("│", " ").split())
    assert all(w in text for w in words), text[-800:]


def test_too_many_images_is_one_paragraph_before_any_work(tmp_path):
    res = _firmware(tmp_path, AD01, tmp_path / "run", "firmware.images=100000")
    _one_paragraph(res, "firmware images = 100000", "at most 10,000")


def test_an_object_array_as_images_is_refused_without_unpickling(tmp_path):
    bad = tmp_path / "objects.npy"
    np.save(bad, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    res = _firmware(tmp_path, AD01, tmp_path / "run", f"images_path={bad}")
    _one_paragraph(res, "images_path", "not a .npy array of numbers")


def test_a_zero_quantization_scale_is_one_paragraph(tmp_path):
    from onnx import numpy_helper

    from tinyflow.ir.onnx_import import OnnxImportError, from_onnx

    model = onnx.load(str(AD01))
    scales = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and not i.dims]
    scales[0].CopyFrom(numpy_helper.from_array(np.float32(0.0), scales[0].name))
    path = tmp_path / "zero_scale.onnx"
    onnx.save(model, str(path))
    with pytest.raises(OnnxImportError, match=r"scale of 0\.0"):
        from_onnx(path)


def test_analyze_an_onnx_network_without_a_path_names_the_field(tmp_path):
    cmd = [sys.executable, "-m", "tinyflow.analyze", "network=onnx", "tracking=none", f"hydra.run.dir={tmp_path}"]
    res = subprocess.run(cmd, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300)
    _one_paragraph(res, "network.path: not set")


@needs_tools
def test_a_device_larger_than_the_emulated_board_is_built_not_run(tmp_path):
    """8 MB of SRAM and flash: the firmware links for the device, but the emulated board has 4 MB of each, so it is
    not run (a failed check saying why) instead of a qemu lockup."""
    import json

    extra = ("device=custom", "device.sram_kb=8192", "device.flash_kb=8192", "device.core=cortex_m7")
    res = _firmware(tmp_path, AD01, tmp_path / "run", *extra, "device.clock_mhz=400")
    assert res.returncode == 2, res.stderr[-2000:]
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result["built"] and not result["ran"]
    assert any("emulated MPS2 board" in f for f in result["failed_checks"])


@pytest.mark.parametrize("index", [9999, -2])
def test_a_tflite_subgraph_input_out_of_range_is_one_paragraph(tmp_path, index):
    """The subgraph's input names a tensor that does not exist (or a negative index, which must not wrap around)."""
    import tflite

    from tinyflow.ir.model_errors import ModelImportError
    from tinyflow.ir.tflite_import import from_tflite

    data = bytearray((MODELS / "kws_ref_model.tflite").read_bytes())
    inputs = tflite.Model.GetRootAsModel(data, 0).Subgraphs(0).InputsAsNumpy()  # a view into `data`
    inputs[0] = index
    path = tmp_path / "bad_input.tflite"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelImportError, match=f"name tensor {index} of"):
        from_tflite(path)


def test_a_reshape_to_negative_dimensions_is_refused():
    """[-2, -96] has the product of a 2×96 tensor, and is no shape."""
    from tinyflow.ir.graph import Graph
    from tinyflow.ir.ops import IRError

    g = Graph("neg")
    g.add("x", "input", (), {"shape": (1, 2, 96)})
    with pytest.raises(IRError, match="below 1"):
        g.add("r", "reshape", ["x"], {"shape": (-2, -96)})
