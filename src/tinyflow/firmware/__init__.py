"""Firmware: C99 code generated from an int8 model and its ExecutionPlan, built for Cortex-M, run on an emulator.

`qmodel` reads the int8 QDQ ONNX into integer layers, `oracle` runs them in NumPy (the bit-exact reference),
`codegen` writes the C project, `linker` the startup file and linker script for a device, `build` compiles and
links (link-time memory proof), `emulator` runs it on qemu. `python -m tinyflow.firmware` and `backend=c` drive
them (docs/design.md §15).
"""
