"""Class hierarchies live beside the head that uses them, in ``tinyar/nn/hierarchy.py``
(so that importing ``tinyar.nn`` loads none of ``tinyar.data``); the data sets name
them here too, as ``tinyar.data.ClassHierarchy``."""
from ..nn.hierarchy import ClassHierarchy, HierarchyError  # noqa: F401
