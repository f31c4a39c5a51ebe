"""Built-in search-space plugins: `mcunet` (the elastic MBConv space) and `mobilenetv2` (a fixed member)."""

from tinyflow_plugins.search_spaces.mcunet import McunetSpace, MobileNetV2Space

__all__ = ["McunetSpace", "MobileNetV2Space"]
