"""Op kinds' parts (`tinyflow.ir.op_registry`): the built-in kinds' declarations, and one module per further kind.

Importing this package (which `tinyflow.ir.ops` does) declares them all; a new kind is a module here that registers
its `OpKind` and its `OpParts`, plus its import below.
"""

from tinyflow.ir.kinds import builtin as _builtin  # noqa: F401
from tinyflow.ir.kinds import transpose as _transpose  # noqa: F401
